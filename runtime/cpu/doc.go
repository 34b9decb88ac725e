// Package cpu is kdnative's CPU backend and the numerical reference for every
// other backend. It computes in float32: matrix products through gonum's BLAS,
// every other op as a loop split across GOMAXPROCS goroutines.
//
// Each op's arithmetic is written once, as a generic kernel over float32 and
// float64 (the files named after the ops: norm.go, attention.go, …). The
// backend runs the float32 instance; the tests run the float64 instance
// against finite differences, and the float32 one against the float64 one.
//
// Importing the package registers the backend as "cpu".
package cpu

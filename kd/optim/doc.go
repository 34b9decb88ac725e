// Package optim holds kdnative's optimizers. They work on runtime tensors
// through the Backend, so the same code updates a model on the CPU or a GPU.
package optim

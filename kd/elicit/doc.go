// Package elicit gets the teacher's knowledge into data kdnative trains on.
// This file set holds curation: filtering generated data by length and
// script, and removing exact and near duplicates (MinHash over word
// n-grams with locality-sensitive hashing), with a report of what was
// dropped and why.
package elicit

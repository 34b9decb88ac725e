package runtime

// FeatureOps are the ops of feature and relation distillation (matching
// hidden states and their pairwise similarities).
type FeatureOps interface {
}

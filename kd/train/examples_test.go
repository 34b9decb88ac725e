package train

import (
	"path/filepath"
	"testing"
)

// TestExampleRecipes: the shipped example recipes parse strictly and pass
// validation.
func TestExampleRecipes(t *testing.T) {
	files, _ := filepath.Glob("../../examples/recipes/*.yaml")
	files = append(files, "../demo/assets/recipes/teacher.yaml")
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		r, err := LoadRecipe(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

package serve

import (
	"path/filepath"
	"testing"

	"github.com/kdnative/kdnative/model/tokenizer"
)

// TestPieceSentencePiece: logprobs show a SentencePiece token with its
// leading space (▁), which decoding the token alone strips, and its bytes
// as the text it stands for; the pieces of an encoding join to the text as
// the tokenizer saw it, so text offsets add up.
func TestPieceSentencePiece(t *testing.T) {
	tok, err := tokenizer.FromGGUF(filepath.Join("..", "..", "model", "tokenizer", "testdata", "llamacpp", "ggml-vocab-llama-spm.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{tok: tok}
	const text = "Hello world, déjà vu"
	ids := tok.EncodeOrdinary(text)
	joined := ""
	for _, id := range ids {
		p := s.piece(id)
		b := s.tokenBytes(id)
		if len(b) != len(p) {
			t.Errorf("token %d: piece %q, %d bytes", id, p, len(b))
		}
		joined += p
	}
	if joined != " "+text {
		t.Fatalf("pieces join to %q, want %q", joined, " "+text)
	}
	if w := tok.EncodeOrdinary(" world"); len(w) == 0 || s.piece(w[len(w)-1]) != " world" {
		t.Errorf("the token of \" world\": piece %q", s.piece(w[len(w)-1]))
	}
}

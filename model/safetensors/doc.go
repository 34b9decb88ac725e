// Package safetensors reads and writes the Hugging Face safetensors format,
// the checkpoint format of transformers.
//
// A safetensors file is an 8-byte little-endian length N, then N bytes of JSON
// header, then the data region:
//
//	{"__metadata__": {"format": "pt"},
//	 "lm_head.weight": {"dtype": "BF16", "shape": [V, C], "data_offsets": [0, 2·V·C]}, ...}
//
// Offsets are relative to the start of the data region; values are stored
// row-major and little-endian.
//
// Open memory-maps one file read-only and validates its header completely
// (ParseHeader is the pure parser it uses); Float32 and Int32 copy a tensor
// out, converting from the stored dtype. OpenDir opens a model folder, either
// one model.safetensors or the shards named by model.safetensors.index.json.
//
// A header is bounded before it can cost much: at most MaxHeaderSize bytes,
// MaxTensors tensors and MaxRank dimensions per tensor, read as a stream so
// that an oversized entry is refused at the first element past its limit;
// an index file at most MaxIndexSize bytes.
//
// Write and WriteDir produce files that transformers and the reference
// implementation load unchanged: the header is laid out the way the reference
// writer lays it out (padded with spaces to a multiple of 8 bytes, tensors
// ordered by dtype width and then by name, data contiguous from offset 0), and
// sharded checkpoints are split, named and indexed the way transformers' save_pretrained
// does it. Every file is written to a temporary file in the same folder,
// synced and renamed into place, so a crash leaves either the old file or the
// new one.
//
// Errors name the file and, where there is one, the tensor; they wrap the
// sentinel errors below, for errors.Is.
package safetensors

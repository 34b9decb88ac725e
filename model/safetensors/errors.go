package safetensors

import "errors"

// Sentinel errors. Every error this package returns that stems from file
// contents wraps one of them; the message adds the file path and, where there
// is one, the tensor name.
var (
	// ErrInvalidHeader: the file is too short, or its header is not a valid
	// safetensors header (bad length, bad JSON, bad or inconsistent tensor
	// entry, overlapping tensors, duplicate names, bad __metadata__).
	ErrInvalidHeader = errors.New("safetensors: invalid header")
	// ErrTruncated: a tensor's data lies past the end of the file.
	ErrTruncated = errors.New("safetensors: truncated file")
	// ErrNotFound: no tensor of that name.
	ErrNotFound = errors.New("safetensors: no such tensor")
	// ErrDType: the tensor's dtype cannot be read as the requested type, or
	// an integer value does not fit it.
	ErrDType = errors.New("safetensors: unsupported dtype")
	// ErrInvalidIndex: a model folder's model.safetensors.index.json does not
	// agree with its shards, or the folder holds no weights.
	ErrInvalidIndex = errors.New("safetensors: invalid model folder")
	// ErrClosed: the File or Set was closed.
	ErrClosed = errors.New("safetensors: file closed")
	// ErrInvalidTensor: a Tensor passed to Write or WriteDir is inconsistent.
	ErrInvalidTensor = errors.New("safetensors: invalid tensor")
)

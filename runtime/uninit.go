package runtime

// UninitAllocator is an optional interface of a Backend: an allocation
// without Alloc's zero fill, for a tensor whose every element is written
// before it is read (activations, the scratch of an op). On a GPU it saves
// a memset of the whole tensor; on the CPU, whose Go memory is zeroed
// anyway, there is nothing to save and no backend method.
type UninitAllocator interface {
	// AllocUninit is Alloc, leaving the contents undefined.
	AllocUninit(name string, dt DType, shape ...int) (*Tensor, error)
}

// AllocUninit allocates through be's AllocUninit when it has one, else
// through Alloc (zero-filled, which is a valid undefined content).
func AllocUninit(be Backend, name string, dt DType, shape ...int) (*Tensor, error) {
	if u, ok := be.(UninitAllocator); ok {
		return u.AllocUninit(name, dt, shape...)
	}
	return be.Alloc(name, dt, shape...)
}

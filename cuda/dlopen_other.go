//go:build !(linux && (amd64 || arm64))

package cuda

import (
	"errors"
	"fmt"
	"runtime"
)

var errUnsupported = fmt.Errorf("CUDA is supported on linux/amd64 and linux/arm64, not %s/%s", runtime.GOOS, runtime.GOARCH)

func unsupported() error { return errUnsupported }

func dlopen(string) (uintptr, error) { return 0, errUnsupported }

func dlsym(uintptr, string) (uintptr, error) { return 0, errUnsupported }

func registerFunc(any, uintptr) { panic(errors.New("cuda: registerFunc on an unsupported platform")) }

func loadedPath(_, fallback string) string { return fallback }

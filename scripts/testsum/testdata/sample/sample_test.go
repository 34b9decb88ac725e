// Package sample is run by testsum's test through `go test -json`: a
// passing test, skips with and without a reason, and (when asked) a failing
// one. It lies under testdata, so ./... leaves it out.
package sample

import (
	"os"
	"testing"
	"time"
)

func TestPasses(t *testing.T) { t.Log("a passing test's log line") }

func TestNeedsGPU(t *testing.T) { t.Skip("no GPU here: libcuda.so.1 not found") }

func TestNoReason(t *testing.T) { t.SkipNow() }

func TestSub(t *testing.T) {
	t.Run("emulator", func(t *testing.T) { t.Skipf("no g++ (%s)", "install it") })
}

func TestFails(t *testing.T) {
	if os.Getenv("TESTSUM_SAMPLE_FAIL") == "" {
		t.Skip("fails only when testsum's test asks")
	}
	t.Error("the failure's message")
}

func TestHangs(t *testing.T) {
	if os.Getenv("TESTSUM_SAMPLE_HANG") == "" {
		t.Skip("hangs only when testsum's test asks")
	}
	t.Log("before the hang")
	time.Sleep(time.Hour) // -timeout ends it
}

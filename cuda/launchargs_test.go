package cuda

import (
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kdnative/kdnative/kernels"
)

// TestLaunchArgsMatchKernels checks, without a GPU, what only a GPU would
// otherwise catch: that every launch passes as many arguments as the kernel
// takes, each of the type the kernel reads. launch hands the driver an
// 8-byte slot per argument and the driver reads the parameter's own size
// from it, so an int32 given for an i64 (or a float32 for a double) would be
// garbage on the device. The Go side is type-checked with go/types; the
// kernel side is parsed from kernels/*.cu.
func TestLaunchArgsMatchKernels(t *testing.T) {
	sigs := kernelSignatures(t)
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool {
		ok, err := build.Default.MatchFile(".", fi.Name())
		return err == nil && ok && !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, p := range pkgs {
		for _, f := range p.Files {
			files = append(files, f)
		}
	}
	info := &types.Info{Types: map[ast.Expr]types.TypeAndValue{}}
	conf := types.Config{Importer: importer.ForCompiler(fset, "source", nil)}
	if _, err := conf.Check("github.com/kdnative/kdnative/cuda", fset, files, info); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, f := range files {
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "launch" || len(call.Args) < 5 {
					return true
				}
				where := fset.Position(call.Pos()).String()
				if call.Ellipsis.IsValid() {
					t.Errorf("%s: the launch spreads a slice of arguments, which cannot be checked; pass them one by one", where)
					return true
				}
				names := launchedNames(call.Args[1], fn.Body, info)
				if len(names) == 0 {
					t.Errorf("%s: cannot tell which kernel this launch runs (use a string literal, kernelFor(\"name\", dt), or a variable assigned one of those in the same function)", where)
					return true
				}
				for _, name := range names {
					checkLaunch(t, where, name, sigs, call.Args[5:], info)
				}
				checked++
				return true
			})
		}
	}
	if checked == 0 {
		t.Fatal("found no launches to check")
	}
	t.Logf("%d launch sites checked against %d kernel signatures", checked, len(sigs))
}

// checkLaunch compares one launch's arguments with a kernel's parameters.
func checkLaunch(t *testing.T, where, name string, sigs map[string][]string, args []ast.Expr, info *types.Info) {
	t.Helper()
	params, ok := sigs[name]
	if !ok {
		t.Errorf("%s: kernel %s is not defined in kernels/*.cu", where, name)
		return
	}
	if len(args) != len(params) {
		t.Errorf("%s: %s takes %d parameters (%s), the launch passes %d", where, name, len(params), strings.Join(params, ", "), len(args))
		return
	}
	for i, a := range args {
		got := goKind(info.Types[a].Type)
		if want := cKind(params[i]); got != want {
			t.Errorf("%s: %s parameter %d is %q (wants Go %s), the launch passes %s", where, name, i, params[i], want, info.Types[a].Type)
		}
	}
}

// launchedNames resolves the kernel argument of a launch: a string
// constant; kernelFor("base", dt), whose variants share one signature; or a
// local variable, through every assignment to it in the function body.
func launchedNames(e ast.Expr, body *ast.BlockStmt, info *types.Info) []string {
	if name, ok := launchedName(e, info); ok {
		return []string{name}
	}
	id, ok := e.(*ast.Ident)
	if !ok {
		return nil
	}
	var out []string
	failed := false
	ast.Inspect(body, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if !ok || len(as.Lhs) != len(as.Rhs) {
			return true
		}
		for i, l := range as.Lhs {
			if li, ok := l.(*ast.Ident); ok && li.Name == id.Name {
				if name, ok := launchedName(as.Rhs[i], info); ok {
					out = append(out, name)
				} else {
					failed = true
				}
			}
		}
		return true
	})
	if failed {
		return nil
	}
	return out
}

func launchedName(e ast.Expr, info *types.Info) (string, bool) {
	if tv, ok := info.Types[e]; ok && tv.Value != nil {
		s, err := strconv.Unquote(tv.Value.ExactString())
		return s, err == nil
	}
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 2 {
		return "", false
	}
	if id, ok := call.Fun.(*ast.Ident); !ok || id.Name != "kernelFor" {
		return "", false
	}
	if tv, ok := info.Types[call.Args[0]]; ok && tv.Value != nil {
		s, err := strconv.Unquote(tv.Value.ExactString())
		return s + "_f32", err == nil
	}
	return "", false
}

// goKind names the kernel parameter kind a Go argument type fills.
func goKind(t types.Type) string {
	if t == nil {
		return "?"
	}
	b, ok := t.Underlying().(*types.Basic)
	if !ok {
		return t.String()
	}
	switch b.Kind() {
	case types.Uint64:
		return "uint64"
	case types.Int32:
		return "int32"
	case types.Uint32:
		return "uint32"
	case types.Int64:
		return "int64"
	case types.Float32:
		return "float32"
	case types.Float64:
		return "float64"
	}
	return b.String()
}

// cKind maps a kernel parameter declaration to the Go type launch needs.
func cKind(decl string) string {
	if strings.Contains(decl, "*") {
		return "uint64"
	}
	f := strings.Fields(strings.ReplaceAll(decl, "const ", ""))
	if len(f) < 2 {
		return "?" + decl
	}
	switch strings.Join(f[:len(f)-1], " ") {
	case "int":
		return "int32"
	case "unsigned", "unsigned int":
		return "uint32"
	case "i64", "long long":
		return "int64"
	case "unsigned long long":
		return "uint64"
	case "float":
		return "float32"
	case "double":
		return "float64"
	}
	return "?" + decl
}

// kernelSignatures parses every kernel's parameter list from the sources:
// extern "C" __global__ void NAME(PARAMS) and KD_EXPORT(NAME, (PARAMS), ...).
func kernelSignatures(t *testing.T) map[string][]string {
	sigs := map[string][]string{}
	externRe := regexp.MustCompile(`extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\(\s*\d+\s*\)\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*\(`)
	exportRe := regexp.MustCompile(`(?m)^\s*KD_EXPORT(?:_BOUNDED)?\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*(?:\d+\s*,\s*)?\(`)
	for _, p := range kernels.Programs() {
		src := stripComments(p.Source[strings.Index(p.Source, "#line 1"):])
		for _, m := range externRe.FindAllStringSubmatchIndex(src, -1) {
			sigs[src[m[2]:m[3]]] = splitParams(t, src[m[1]:])
		}
		for _, m := range exportRe.FindAllStringSubmatchIndex(src, -1) {
			params := splitParams(t, src[m[1]:])
			name := src[m[2]:m[3]]
			sigs[name+"_f32"], sigs[name+"_bf16"] = params, params
		}
	}
	return sigs
}

// splitParams reads a parameter list up to its closing parenthesis.
func splitParams(t *testing.T, s string) []string {
	depth := 1
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				body := strings.TrimSpace(s[:i])
				if body == "" || body == "void" {
					return nil
				}
				parts := strings.Split(body, ",")
				for j := range parts {
					parts[j] = strings.Join(strings.Fields(parts[j]), " ")
				}
				return parts
			}
		}
	}
	t.Fatalf("unbalanced parameter list: %.80s", s)
	return nil
}

var commentRe = regexp.MustCompile(`(?s)//[^\n]*|/\*.*?\*/`)

func stripComments(s string) string { return commentRe.ReplaceAllString(s, "") }

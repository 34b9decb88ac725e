package data

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// A Parquet data file holds the same records as a JSONL file, one per row,
// with the fields as columns: strings, lists of numbers, lists of structs
// (messages), nulls where a JSON line would leave a field out. Each row is
// turned into the JSON object the equivalent line would be and parsed by the
// same code, so a row and a line become the same example and break the same
// rules. Rows are read a row group at a time, a batch of rows at a time; a
// file is never read whole.

// rowBatch is how many rows are read at once.
const rowBatch = 64

// parquetSource reads the rows of a Parquet file as JSON objects.
type parquetSource struct {
	path   string
	f      *os.File
	pf     *parquet.File
	groups []parquet.RowGroup
	g      int           // current row group
	rows   parquet.Rows  // its rows, nil before the group is opened
	buf    []parquet.Row // rows read and not yet returned
	bi, bn int
	row    int // index in the row group of the row last returned
	total  int // rows returned before the current group
}

// isParquet says whether path names a Parquet file.
func isParquet(path string) bool { return strings.HasSuffix(strings.ToLower(path), ".parquet") }

// openParquet opens a Parquet data file and checks its columns with check
// (nil: no check).
func openParquet(path string, check func(cols map[string]bool) error) (s *parquetSource, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data: %w", err)
	}
	defer func() {
		if r := recover(); r != nil {
			f.Close()
			s, err = nil, fmt.Errorf("data: %s is not a readable Parquet file: %v", path, r)
		}
	}()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data: %s is not a readable Parquet file: %v", path, err)
	}
	cols := map[string]bool{}
	for _, fl := range pf.Schema().Fields() {
		cols[fl.Name()] = true
	}
	if check != nil {
		if err := check(cols); err != nil {
			f.Close()
			return nil, fmt.Errorf("data: %s: %v", path, err)
		}
	}
	return &parquetSource{path: path, f: f, pf: pf, groups: pf.RowGroups(), buf: make([]parquet.Row, rowBatch), row: -1}, nil
}

func (s *parquetSource) Close() error {
	if s.rows != nil {
		s.rows.Close()
	}
	return s.f.Close()
}

// next returns the next row as a JSON object, or io.EOF after the last.
func (s *parquetSource) next() (rec []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			rec, err = nil, fmt.Errorf("%s: row group %d: the file is damaged: %v", s.path, s.g, r)
		}
	}()
	for s.bi == s.bn {
		if s.rows == nil {
			if s.g >= len(s.groups) {
				return nil, io.EOF
			}
			s.rows = s.groups[s.g].Rows()
			s.row = -1
		}
		n, err := s.rows.ReadRows(s.buf)
		s.bi, s.bn = 0, n
		if err == io.EOF || (n == 0 && err == nil) {
			if n == 0 {
				s.rows.Close()
				s.rows = nil
				s.total += s.row + 1
				s.g++
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: row group %d: %v", s.path, s.g, err)
		}
	}
	r := s.buf[s.bi]
	s.bi++
	s.row++
	m := map[string]any{}
	if err := s.pf.Schema().Reconstruct(&m, r); err != nil {
		return nil, fmt.Errorf("%s: row group %d, row %d: %v", s.path, s.g, s.row, err)
	}
	b, err := json.Marshal(jsonSafe(m))
	if err != nil {
		return nil, fmt.Errorf("%s: row group %d, row %d: %v", s.path, s.g, s.row, err)
	}
	return b, nil
}

// where is the position of the row last returned.
func (s *parquetSource) where() (group, row, fileRow int) {
	return s.g, s.row, s.total + s.row
}

// jsonSafe makes a reconstructed value encodable as the JSON a line would
// hold: binary columns without a string annotation are read as text, NaN
// and infinities (which JSON cannot hold) as the strings a line could not
// hold either.
func jsonSafe(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonSafe(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = jsonSafe(e)
		}
		return x
	case []byte:
		return string(x)
	case float64:
		if x != x || x > 1.7976931348623157e308 || x < -1.7976931348623157e308 {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
	case float32:
		f := float64(x)
		if f != f || f > 3.4028234663852886e38 || f < -3.4028234663852886e38 {
			return strconv.FormatFloat(f, 'g', -1, 32)
		}
	}
	return v
}

// checkColumns checks once per file what each line checks: that the
// columns hold one of the record shapes. A missing column is named.
func checkColumns(cols map[string]bool, pairs bool) error {
	has := func(k string) bool { return cols[k] }
	list := func() string {
		var names []string
		for c := range cols {
			names = append(names, strconv.Quote(c))
		}
		sort.Strings(names)
		if len(names) == 0 {
			return "none"
		}
		return strings.Join(names, ", ")
	}
	if pairs {
		if has("prompt_input_ids") || has("chosen_input_ids") || has("rejected_input_ids") {
			for _, c := range []string{"prompt_input_ids", "chosen_input_ids", "rejected_input_ids"} {
				if !has(c) {
					return fmt.Errorf("no %q column (a pre-tokenized pair needs prompt_input_ids, chosen_input_ids and rejected_input_ids; columns: %s)", c, list())
				}
			}
			return nil
		}
		for _, c := range []string{"chosen", "rejected"} {
			if !has(c) {
				return fmt.Errorf("no %q column (a preference pair needs chosen and rejected, and a prompt unless they are conversations; columns: %s)", c, list())
			}
		}
		return nil
	}
	switch {
	case has("input_ids"), has("messages"), has("conversations"):
		return nil
	case has("prompt") && (has("response") || has("completion")):
		return nil
	case has("chosen") || has("rejected") || has("chosen_input_ids"):
		return errors.New("preference pairs (chosen/rejected columns): load them as DPO data")
	case has("prompt"):
		return fmt.Errorf(`no "response" (or "completion") column beside "prompt" (columns: %s)`, list())
	case has("response") || has("completion"):
		return fmt.Errorf(`no "prompt" column beside the response (columns: %s)`, list())
	case has("text"):
		return nil
	}
	return fmt.Errorf("no known columns (columns: %s): want prompt/response, messages, text or input_ids/labels", list())
}

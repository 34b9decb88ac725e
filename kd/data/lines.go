package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// records is the one place data files are read: the records of a JSONL
// file (gzipped or not) or of a Parquet file, each with where it stands.
type records interface {
	// next returns the next record, whether it was too long to read (JSONL
	// only), its position (Reason left empty), or io.EOF after the last.
	next() (rec []byte, tooLong bool, pos LineError, err error)
	Close() error
}

// openRecords opens a data file as records. pairs says which record shapes
// a Parquet file's columns must make.
func openRecords(path string, maxLine int, pairs bool) (records, error) {
	return openRecordsCheck(path, maxLine, func(cols map[string]bool) error { return checkColumns(cols, pairs) })
}

// openRecordsCheck is openRecords with the check of a Parquet file's
// columns given (nil: none).
func openRecordsCheck(path string, maxLine int, check func(cols map[string]bool) error) (records, error) {
	if isParquet(path) {
		s, err := openParquet(path, check)
		if err != nil {
			return nil, err
		}
		return parquetRecords{s}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	var r io.Reader = f
	var gz *gzip.Reader
	if strings.HasSuffix(path, ".gz") {
		if gz, err = gzip.NewReader(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("data: %s: %w", path, err)
		}
		r = gz
	}
	return &jsonlRecords{path: path, f: f, gz: gz, lr: newLineReader(r, maxLine)}, nil
}

// jsonlRecords reads the lines of a JSONL file.
type jsonlRecords struct {
	path string
	f    *os.File
	gz   *gzip.Reader
	lr   *lineReader
}

func (j *jsonlRecords) next() ([]byte, bool, LineError, error) {
	line, tooLong, err := j.lr.next()
	if err != nil && err != io.EOF {
		return nil, false, LineError{}, fmt.Errorf("reading %s after line %d: %w", j.path, j.lr.n, err)
	}
	return line, tooLong, LineError{File: j.path, Line: j.lr.n}, err
}

func (j *jsonlRecords) Close() error {
	if j.gz != nil {
		j.gz.Close()
	}
	return j.f.Close()
}

// parquetRecords reads the rows of a Parquet file.
type parquetRecords struct{ s *parquetSource }

func (p parquetRecords) next() ([]byte, bool, LineError, error) {
	rec, err := p.s.next()
	g, r, fr := p.s.where()
	return rec, false, LineError{File: p.s.path, Line: fr + 1, Parquet: true, RowGroup: g, Row: r}, err
}

func (p parquetRecords) Close() error { return p.s.Close() }

// String is the position as messages give it: "file:line", or the Parquet
// row group and row.
func (e LineError) String() string {
	if e.Parquet {
		return fmt.Sprintf("%s: row group %d, row %d", e.File, e.RowGroup, e.Row)
	}
	return fmt.Sprintf("%s:%d", e.File, e.Line)
}

// lineReader reads a file line by line without a line length limit of its
// own: a line longer than max is read to its end and discarded, and reported
// as too long instead of failing the read.
type lineReader struct {
	r   *bufio.Reader
	max int
	buf []byte
	n   int // number of the line last returned, 1-based
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its "\n" (and "\r"), whether it was too
// long (then line is nil), or io.EOF after the last line.
func (lr *lineReader) next() (line []byte, tooLong bool, err error) {
	lr.buf = lr.buf[:0]
	read := false
	for {
		chunk, err := lr.r.ReadSlice('\n')
		if len(chunk) > 0 {
			read = true
			if !tooLong {
				if len(lr.buf)+len(chunk) > lr.max+2 { // +2: the "\r\n" is not part of the line
					tooLong = true
					lr.buf = lr.buf[:0]
				} else {
					lr.buf = append(lr.buf, chunk...)
				}
			}
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF {
			if !read {
				return nil, false, io.EOF
			}
			break
		}
		return nil, false, err
	}
	lr.n++
	if tooLong {
		return nil, true, nil
	}
	line = bytes.TrimSuffix(lr.buf, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > lr.max {
		return nil, true, nil
	}
	if lr.n == 1 {
		line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	}
	return line, false, nil
}

// ForEachRecord calls fn with every record of a data file, in order: each
// non-blank line of a JSONL file (gzipped when the name ends in .gz), or each
// row of a Parquet file (name ending in .parquet) as the JSON object the
// equivalent line would be. at is the record's position, for messages
// ("file:line", or the Parquet row group and row); its Reason is empty. A
// line longer than maxLine bytes (0: DefaultMaxLineBytes) is passed as an
// error to fn with a nil record. An error from fn stops the reading and is
// returned. Commands that read prompts or records of their own shapes use
// it, so every data file they take may be Parquet too.
func ForEachRecord(path string, maxLine int, fn func(rec []byte, at LineError, err error) error) error {
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	src, err := openRecordsCheck(path, maxLine, nil)
	if err != nil {
		return err
	}
	defer src.Close()
	for {
		rec, tooLong, pos, err := src.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("data: %w", err)
		}
		if tooLong {
			if err := fn(nil, pos, fmt.Errorf("line is longer than %d bytes (the line limit)", maxLine)); err != nil {
				return err
			}
			continue
		}
		if len(bytes.TrimSpace(rec)) == 0 {
			continue
		}
		if err := fn(rec, pos, nil); err != nil {
			return err
		}
	}
}

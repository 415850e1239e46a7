package sim

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Format names a trace file format.
type Format string

// Formats. FormatAuto tells them apart by the first line: a Bitbrains
// header, a comma, or a bare number (PlanetLab).
const (
	FormatAuto      Format = "auto"
	FormatPlanetLab Format = "planetlab"
	FormatBitbrains Format = "bitbrains"
	FormatCSV       Format = "csv"
)

// ReadOptions say how to turn files into traces.
type ReadOptions struct {
	Format Format
	// Requested is the VM size assumed for PlanetLab and plain CSV traces,
	// which do not record one (default 8). Bitbrains records its cores.
	Requested int
}

// Read streams the traces under each path — a file, or a folder whose
// regular files are read in name order (not recursively; names starting
// with a dot are skipped). Only one trace is held at a time. A file that
// cannot be read or parsed yields an error naming it (and the line) and
// the sequence goes on with the next file.
//
// A PlanetLab folder named YYYYMMDD (as in the CloudSim workloads) dates
// its samples from midnight UTC of that day; otherwise they start at the
// Unix epoch.
func Read(paths []string, opt ReadOptions) iter.Seq2[*Trace, error] {
	if opt.Requested == 0 {
		opt.Requested = 8
	}
	if opt.Format == "" {
		opt.Format = FormatAuto
	}
	return func(yield func(*Trace, error) bool) {
		for _, p := range paths {
			files, err := listFiles(p)
			if err != nil {
				if !yield(nil, err) {
					return
				}
				continue
			}
			for _, f := range files {
				t, err := readFile(f, opt)
				if !yield(t, err) {
					return
				}
			}
		}
	}
}

func listFiles(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	ents, err := os.ReadDir(p) // sorted by name
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		files = append(files, filepath.Join(p, e.Name()))
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no trace files in the folder", p)
	}
	return files, nil
}

func readFile(path string, opt ReadOptions) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parse(path, f, opt)
}

// parse reads one trace in the given (or sniffed) format. name is the
// file's path, used in errors; the trace is named by its base name.
func parse(name string, r io.Reader, opt ReadOptions) (*Trace, error) {
	br := bufio.NewReader(r)
	format := opt.Format
	if format == FormatAuto || format == "" {
		head, _ := br.Peek(4096)
		format = sniff(head)
	}
	var t *Trace
	var err error
	switch format {
	case FormatPlanetLab:
		t, err = parsePlanetLab(name, br, opt.Requested, planetLabStart(name))
	case FormatBitbrains:
		t, err = parseBitbrains(name, br)
	case FormatCSV:
		t, err = parseCSV(name, br, opt.Requested)
	default:
		return nil, fmt.Errorf("%s: unknown trace format %q (want %s, %s, %s or %s)", name, format, FormatAuto, FormatPlanetLab, FormatBitbrains, FormatCSV)
	}
	if err != nil {
		return nil, err
	}
	t.Name = filepath.Base(name)
	return t, nil
}

// sniff guesses the format from the start of a file.
func sniff(head []byte) Format {
	first, _, _ := bytes.Cut(head, []byte("\n"))
	switch {
	case bytes.Contains(first, []byte(bbUsage)):
		return FormatBitbrains
	case bytes.Contains(head, []byte(",")):
		return FormatCSV
	}
	return FormatPlanetLab
}

// planetLabStart dates a PlanetLab file from its folder's name.
func planetLabStart(path string) time.Time {
	if day, err := time.Parse("20060102", filepath.Base(filepath.Dir(path))); err == nil {
		return day
	}
	return time.Unix(0, 0).UTC()
}

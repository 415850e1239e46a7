// Package tail follows log files the way mtail and Grafana Alloy do: it
// polls each file and reads to EOF, notices rotation by a changed inode
// (draining the old file first), truncation by a size below its offset,
// and keeps its position (device, inode, offset) in a state file so that a
// restarted agent neither loses nor counts twice the lines written while
// it was away. fsnotify events on the parent directory, when enabled, only
// wake the poller early; polling alone is correct.
//
// Every byte read is untrusted: memory per file is bounded by
// Options.MaxLineBytes plus one read buffer, a line longer than the limit
// is cut and reported as such, and a damaged state file is ignored with a
// warning, never trusted. The package delivers lines; it does not parse
// them and does not decide what they mean.
//
// Known limits, shared with mtail and Alloy: a file truncated and refilled
// past the old offset between two polls looks like an appended file; a
// glob that also matches copytruncate's copies reads their lines twice;
// an inode reused by a new file while the agent was stopped is resumed at
// the old offset.
package tail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// Defaults and bounds.
const (
	DefaultMaxLineBytes = 64 << 10
	DefaultPoll         = 250 * time.Millisecond
	DefaultRotateGrace  = 5 * time.Second
	// MaxFiles bounds the files one Tailer follows at once.
	MaxFiles = 64
	// maxStateBytes bounds the state file we are willing to read.
	maxStateBytes = 1 << 20
	readChunk     = 64 << 10
	// maxReadPerPoll keeps one busy file from starving the others and
	// bounds the time one Poll takes.
	maxReadPerPoll = 8 << 20
	saveEvery      = time.Second
)

// Options configure a Tailer; zero fields take defaults.
type Options struct {
	// Pattern is an absolute path or glob (filepath.Match syntax).
	Pattern string
	// StateFile keeps positions across restarts; empty: none.
	StateFile string
	// MaxLineBytes is the longest line delivered whole (default 64 KiB).
	MaxLineBytes int
	// Poll is the polling interval (default 250 ms).
	Poll time.Duration
	// RotateGrace is how long a file no longer matched by Pattern (renamed
	// away by rotation, or deleted) is still read after its last new byte:
	// nginx and Apache write to the old file until they reopen their logs.
	RotateGrace time.Duration
	// Notify wakes the poller on fsnotify events in the pattern's directory.
	Notify bool
	// FromStart reads files found at start-up without a saved position
	// from their beginning; by default they are read from their end, so
	// that old history does not pass for current load.
	FromStart bool
	Logger    hclog.Logger
	// now is the clock (tests).
	now func() time.Time
}

// File is one followed file. Handlers may keep per-file state in State.
type File struct {
	Path     string
	Dev, Ino uint64
	// Offset is the byte offset just after the last line delivered.
	Offset int64
	State  any

	fd       *os.File
	buf      []byte
	n        int  // bytes of buf in use (a partial line)
	skipping bool // inside a line already cut
	seen     bool // matched by the pattern in this poll
	lastData time.Time
}

// ReadAt reads bytes of the file that were already passed, e.g. to find a
// header line before Offset.
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.fd.ReadAt(p, off) }

// Handler receives the lines. Calls come from the goroutine that runs Poll;
// line is only valid during the call.
type Handler interface {
	// Open is called when a file starts being followed at f.Offset.
	Open(f *File)
	// Line delivers one line without its "\n" (and "\r"); cut means it
	// was longer than MaxLineBytes and this is its first MaxLineBytes.
	Line(f *File, line []byte, cut bool)
	// Close is called when a file is no longer followed.
	Close(f *File)
}

type fileKey struct{ dev, ino uint64 }

// Position is one file's entry in the state file.
type Position struct {
	Path     string `json:"path"`
	Dev      uint64 `json:"dev"`
	Ino      uint64 `json:"ino"`
	Offset   int64  `json:"offset"`
	Skipping bool   `json:"skipping,omitempty"`
}

type stateFile struct {
	Version int        `json:"version"`
	Pattern string     `json:"pattern"`
	Files   []Position `json:"files"`
}

// Tailer follows the files matching one pattern.
type Tailer struct {
	opt     Options
	h       Handler
	log     hclog.Logger
	files   map[fileKey]*File
	saved   map[fileKey]Position // positions from the state file, until used
	started bool
	// haveState: positions were loaded, so a file without one appeared
	// while the agent was stopped and is read from its start.
	haveState bool
	dirty     bool
	lastSave  time.Time
	warned    map[string]bool
}

// New checks the options and reads the state file. A missing state file is
// normal; an unreadable or damaged one is reported to the logger and
// ignored (files are then read from their end).
func New(opt Options, h Handler) (*Tailer, error) {
	if !filepath.IsAbs(opt.Pattern) {
		return nil, fmt.Errorf("log path %q: must be absolute", opt.Pattern)
	}
	if _, err := filepath.Match(opt.Pattern, ""); err != nil {
		return nil, fmt.Errorf("log path %q: bad glob: %v", opt.Pattern, err)
	}
	if opt.MaxLineBytes <= 0 {
		opt.MaxLineBytes = DefaultMaxLineBytes
	}
	if opt.Poll <= 0 {
		opt.Poll = DefaultPoll
	}
	if opt.RotateGrace <= 0 {
		opt.RotateGrace = DefaultRotateGrace
	}
	if opt.Logger == nil {
		opt.Logger = hclog.NewNullLogger()
	}
	if opt.now == nil {
		opt.now = time.Now
	}
	t := &Tailer{opt: opt, h: h, log: opt.Logger, files: map[fileKey]*File{}, saved: map[fileKey]Position{}, warned: map[string]bool{}}
	if opt.StateFile != "" {
		if err := os.MkdirAll(filepath.Dir(opt.StateFile), 0o755); err != nil {
			return nil, fmt.Errorf("state directory for %s: %w (set state_dir to a writable directory)", opt.StateFile, err)
		}
		t.loadState()
	}
	return t, nil
}

func (t *Tailer) loadState() {
	f, err := os.Open(t.opt.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.log.Warn("cannot read log positions; starting at the end of the logs", "file", t.opt.StateFile, "error", err)
		return
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	var st stateFile
	if err == nil && len(b) > maxStateBytes {
		err = fmt.Errorf("larger than %d bytes", maxStateBytes)
	}
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err == nil && st.Version != 1 {
		err = fmt.Errorf("version %d, want 1", st.Version)
	}
	if err == nil && len(st.Files) > MaxFiles*4 {
		err = fmt.Errorf("%d entries", len(st.Files))
	}
	if err != nil {
		t.log.Warn("log positions damaged; ignoring them and starting at the end of the logs (remove the file to silence this)",
			"file", t.opt.StateFile, "error", err)
		return
	}
	if st.Pattern != t.opt.Pattern {
		t.log.Info("log path changed since the positions were saved; ignoring them", "file", t.opt.StateFile, "was", st.Pattern)
		return
	}
	t.haveState = true
	for _, p := range st.Files {
		if p.Offset >= 0 {
			t.saved[fileKey{p.Dev, p.Ino}] = p
		}
	}
}

// Positions returns the current position of every followed file.
func (t *Tailer) Positions() []Position {
	out := make([]Position, 0, len(t.files))
	for _, f := range t.files {
		out = append(out, Position{Path: f.Path, Dev: f.Dev, Ino: f.Ino, Offset: f.Offset, Skipping: f.skipping})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Save writes the positions to the state file now (write to a temporary
// file, fsync, rename, fsync the directory).
func (t *Tailer) Save() error {
	if t.opt.StateFile == "" {
		return nil
	}
	b, err := json.Marshal(stateFile{Version: 1, Pattern: t.opt.Pattern, Files: t.Positions()})
	if err != nil {
		return err
	}
	if err := writeAtomic(t.opt.StateFile, b); err != nil {
		return fmt.Errorf("saving log positions to %s: %w (check state_dir is writable)", t.opt.StateFile, err)
	}
	t.dirty, t.lastSave = false, t.opt.now()
	return nil
}

func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (t *Tailer) warnOnce(key, msg string, args ...any) {
	if !t.warned[key] {
		t.warned[key] = true
		t.log.Warn(msg, args...)
	}
}

// Poll reads what was appended to every followed file, picks up new files,
// handles rotation and truncation, and saves positions at most once a
// second. It returns true when a file had more to read than one poll takes.
func (t *Tailer) Poll() (more bool) {
	now := t.opt.now()
	matches, _ := filepath.Glob(t.opt.Pattern) // the pattern was checked in New
	for _, f := range t.files {
		f.seen = false
	}
	type found struct {
		path string
		key  fileKey
		size int64
	}
	var fresh []found
	for _, p := range matches {
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		k, ok := keyOf(st)
		if !ok {
			continue
		}
		if f, ok := t.files[k]; ok {
			f.seen, f.Path = true, p
			continue
		}
		fresh = append(fresh, found{p, k, st.Size()})
	}
	// Old files first: a rotated file is drained before its successor.
	for _, f := range t.sorted() {
		if t.read(f, now) {
			more = true
		}
		if t.checkTruncated(f) && t.read(f, now) {
			more = true
		}
		if !f.seen && now.Sub(f.lastData) >= t.opt.RotateGrace {
			t.read(f, now)
			t.closeFile(f, true)
		}
	}
	if !t.started {
		skip := map[fileKey]bool{}
		for _, c := range fresh {
			skip[c.key] = true
		}
		t.resumeRotated(skip)
	}
	for _, c := range fresh {
		if len(t.files) >= MaxFiles {
			t.warnOnce("maxfiles", "log path matches too many files; following only some", "pattern", t.opt.Pattern, "limit", MaxFiles)
			break
		}
		f, err := t.open(c.path, c.key, c.size)
		if err != nil {
			t.warnOnce("open:"+c.path, "cannot open log file", "path", c.path, "error", err)
			continue
		}
		f.seen = true
		if t.read(f, now) {
			more = true
		}
	}
	t.started = true
	if t.dirty && now.Sub(t.lastSave) >= saveEvery {
		if err := t.Save(); err != nil {
			t.warnOnce("save", "cannot save log positions", "error", err)
		}
	}
	return more
}

func (t *Tailer) sorted() []*File {
	out := make([]*File, 0, len(t.files))
	for _, f := range t.files {
		out = append(out, f)
	}
	// Unmatched (rotated) files first, then by path.
	sort.Slice(out, func(i, j int) bool {
		if out[i].seen != out[j].seen {
			return !out[i].seen
		}
		return out[i].Path < out[j].Path
	})
	return out
}

// open starts following a file: at its saved position, at its end when
// it was there before we started, at its start when it appeared since.
func (t *Tailer) open(path string, k fileKey, size int64) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, err
	}
	if k2, ok := keyOf(st); !ok || k2 != k {
		fd.Close()
		return nil, fmt.Errorf("replaced while opening")
	}
	f := &File{Path: path, Dev: k.dev, Ino: k.ino, fd: fd, buf: make([]byte, t.opt.MaxLineBytes+readChunk), lastData: t.opt.now()}
	size = st.Size()
	switch p, ok := t.saved[k]; {
	case ok && p.Offset <= size:
		f.Offset, f.skipping = p.Offset, p.Skipping
		delete(t.saved, k)
	case ok:
		t.log.Info("log file shrank while the agent was stopped; reading it from the start", "path", path)
		delete(t.saved, k)
	case !t.started && !t.opt.FromStart && !t.haveState:
		f.Offset = size
		if size > 0 { // mid-line? skip to the next line start
			var b [1]byte
			if _, err := fd.ReadAt(b[:], size-1); err == nil && b[0] != '\n' {
				f.skipping = true
			}
		}
	}
	if _, err := fd.Seek(f.Offset, io.SeekStart); err != nil {
		fd.Close()
		return nil, err
	}
	t.files[k] = f
	t.dirty = true
	t.h.Open(f)
	return f, nil
}

// resumeRotated finds files rotated away while the agent was stopped: a
// saved inode no longer matched by the pattern but still in the same
// directory (access.log renamed to access.log.1) is drained from its saved
// offset, so the lines written before the rotation are not lost.
func (t *Tailer) resumeRotated(matched map[fileKey]bool) {
	for k, p := range t.saved {
		if matched[k] {
			continue
		}
		dir := filepath.Dir(p.Path)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			path := filepath.Join(dir, e.Name())
			st, err := os.Stat(path)
			if err != nil {
				continue
			}
			if k2, ok := keyOf(st); ok && k2 == k {
				if f, err := t.open(path, k, st.Size()); err == nil {
					f.seen = false // drained, then closed after the grace period
					t.log.Info("draining a log file rotated while the agent was stopped", "path", path)
					t.read(f, t.opt.now())
				}
				break
			}
		}
	}
	for k := range t.saved {
		if !matched[k] {
			delete(t.saved, k)
		}
	}
}

func (t *Tailer) checkTruncated(f *File) bool {
	st, err := f.fd.Stat()
	if err != nil || st.Size() >= f.Offset+int64(f.n) {
		return false
	}
	t.log.Info("log file truncated; reading it from the start", "path", f.Path, "size", st.Size(), "offset", f.Offset)
	t.flush(f)
	if _, err := f.fd.Seek(0, io.SeekStart); err != nil {
		return false
	}
	f.Offset, f.n, f.skipping = 0, 0, false
	t.dirty = true
	return true
}

// flush delivers a partial last line of a file that ends without "\n"
// (rotated away or truncated: no more bytes will follow it).
func (t *Tailer) flush(f *File) {
	if f.n > 0 && !f.skipping {
		t.h.Line(f, trimCR(f.buf[:f.n]), false)
	}
	f.Offset += int64(f.n)
	f.n, f.skipping = 0, false
}

func (t *Tailer) closeFile(f *File, flush bool) {
	if flush {
		t.flush(f)
	}
	t.h.Close(f)
	f.fd.Close()
	delete(t.files, fileKey{f.Dev, f.Ino})
	t.dirty = true
}

func trimCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// read delivers the complete lines appended to f since the last read.
func (t *Tailer) read(f *File, now time.Time) (more bool) {
	limit := t.opt.MaxLineBytes
	total := 0
	for {
		if total >= maxReadPerPoll {
			return true
		}
		n, err := f.fd.Read(f.buf[f.n:])
		if n == 0 {
			if err != nil && !errors.Is(err, io.EOF) {
				t.warnOnce("read:"+f.Path, "cannot read log file", "path", f.Path, "error", err)
			}
			return false
		}
		total += n
		f.lastData = now
		t.dirty = true
		end := f.n + n
		start := 0
		for i := f.n; i < end; i++ {
			if f.buf[i] != '\n' {
				continue
			}
			switch {
			case f.skipping:
				f.skipping = false
			case i-start > limit:
				t.h.Line(f, f.buf[start:start+limit], true)
			default:
				t.h.Line(f, trimCR(f.buf[start:i]), false)
			}
			start = i + 1
		}
		rest := end - start
		switch {
		case f.skipping:
			start, rest = end, 0
		case rest >= limit:
			t.h.Line(f, f.buf[start:start+limit], true)
			f.skipping = true
			start, rest = end, 0
		}
		f.Offset += int64(start)
		copy(f.buf, f.buf[start:end])
		f.n = rest
	}
}

// Close saves the positions and closes every file (a partial last line
// stays unread, to be read whole after a restart).
func (t *Tailer) Close() error {
	err := t.Save()
	for _, f := range t.files {
		t.closeFile(f, false)
	}
	return err
}

// Run polls until ctx ends, then saves the positions and closes the files.
func (t *Tailer) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	if t.opt.Notify {
		if w, err := fsnotify.NewWatcher(); err != nil {
			t.log.Warn("fsnotify unavailable; polling only", "error", err)
		} else {
			defer w.Close()
			dir := filepath.Dir(t.opt.Pattern)
			if err := w.Add(dir); err != nil {
				t.log.Debug("cannot watch log directory; polling only", "dir", dir, "error", err)
			}
			go func() {
				for {
					select {
					case _, ok := <-w.Events:
						if !ok {
							return
						}
						select {
						case wake <- struct{}{}:
						default:
						}
					case _, ok := <-w.Errors:
						if !ok {
							return
						}
					}
				}
			}()
		}
	}
	tick := time.NewTicker(t.opt.Poll)
	defer tick.Stop()
	for {
		if t.Poll() {
			select {
			case <-ctx.Done():
			default:
				continue // more to read: no wait
			}
		}
		select {
		case <-ctx.Done():
			return t.Close()
		case <-tick.C:
		case <-wake:
		}
	}
}

package cpu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/proto"
)

// tree builds a sysfs fixture under t.TempDir. files maps paths relative to
// devices/system/cpu to contents; a value of dirMarker makes a directory.
func tree(t *testing.T, files map[string]string) (root string) {
	t.Helper()
	root = t.TempDir()
	base := filepath.Join(root, "devices", "system", "cpu")
	for rel, content := range files {
		p := filepath.Join(base, rel)
		if content == dirMarker {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const dirMarker = "<dir>"

// guest4 is a 4-CPU guest with 8 possible CPUs: cpu0 has no online file (as
// on kernels without CONFIG_BOOTPARAM_HOTPLUG_CPU0), cpu3 is offline.
func guest4() map[string]string {
	return map[string]string{
		"possible":    "0-7\n",
		"present":     "0-3\n",
		"online":      "0-2\n",
		"cpu0":        dirMarker,
		"cpu1/online": "1\n",
		"cpu2/online": "1\n",
		"cpu3/online": "0\n",
	}
}

func readOnline(t *testing.T, root string, cpu string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "devices", "system", "cpu", cpu, "online"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestLists(t *testing.T) {
	root := tree(t, guest4())
	c := NewController(root)
	for _, tc := range []struct {
		name string
		read func() (proto.CPUSet, error)
		want string
	}{
		{"possible", c.Possible, "0-7"},
		{"present", c.Present, "0-3"},
		{"online", c.OnlineCPUs, "0-2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.read()
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestListErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		wantIs  error
		wantSub string
	}{
		{"missing", map[string]string{"present": "0\n"}, os.ErrNotExist, "devices/system/cpu/online"},
		{"garbage", map[string]string{"online": "0-x\n"}, proto.ErrCPUList, "devices/system/cpu/online"},
		{"past MaxCPUs", map[string]string{"online": "0-4096\n"}, proto.ErrCPUList, "online"},
		{"huge", map[string]string{"online": strings.Repeat("0,", maxListFile)}, nil, "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewController(tree(t, tc.files)).OnlineCPUs()
			if err == nil {
				t.Fatal("no error")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantSub) {
				t.Errorf("error %q does not mention %q", err, tc.wantSub)
			}
		})
	}
}

func TestOffline(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   func(map[string]string)
		cpu     int
		write   func(path string, data []byte) error // nil: real writes
		wantIs  error                                // nil: success
		wantSub string
		after   string // expected content of cpuN/online afterwards
	}{
		{name: "hot-pluggable cpu", cpu: 2, after: "0"},
		{name: "already offline", cpu: 3, after: "0", write: failWrite},
		{name: "cpu0 refused", cpu: 0, wantIs: ErrNotRemovable, wantSub: "cpu 0"},
		{name: "cpu0 refused even with an online file", cpu: 0, wantIs: ErrNotRemovable,
			files: func(f map[string]string) { f["cpu0/online"] = "1\n" }, write: failWrite},
		{name: "no online file refused", cpu: 1, wantIs: ErrNotRemovable, wantSub: "cpu1/online",
			files: func(f map[string]string) { delete(f, "cpu1/online"); f["cpu1"] = dirMarker }},
		{name: "not present", cpu: 6, wantIs: ErrNoCPU, wantSub: "cpu6"},
		{name: "out of range", cpu: proto.MaxCPUs, wantIs: ErrNoCPU},
		{name: "negative", cpu: -1, wantIs: ErrNoCPU},
		{name: "kernel refuses with EBUSY", cpu: 2, after: "1",
			write:  func(string, []byte) error { return syscall.EBUSY },
			wantIs: syscall.EBUSY, wantSub: "cpu2/online"},
		{name: "write accepted but cpu stays online", cpu: 2, after: "1",
			write:  func(string, []byte) error { return nil },
			wantIs: ErrStillOnline, wantSub: "reads 1 after writing 0"},
		{name: "online file is a directory", cpu: 2, wantSub: "cpu2/online",
			files: func(f map[string]string) { delete(f, "cpu2/online"); f["cpu2/online"] = dirMarker }},
		{name: "online file holds garbage", cpu: 2, wantSub: "want 0 or 1",
			files: func(f map[string]string) { f["cpu2/online"] = "yes\n" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := guest4()
			if tc.files != nil {
				tc.files(files)
			}
			root := tree(t, files)
			c := NewController(root)
			if tc.write != nil {
				c.write = tc.write
			}
			err := c.Offline(tc.cpu)
			wantErr := tc.wantIs != nil || tc.wantSub != ""
			switch {
			case !wantErr && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case wantErr && err == nil:
				t.Fatal("no error")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
			if tc.wantSub != "" && !strings.Contains(err.Error(), tc.wantSub) {
				t.Errorf("error %q does not mention %q", err, tc.wantSub)
			}
			if tc.after != "" {
				if got := readOnline(t, root, "cpu"+strconv.Itoa(tc.cpu)); got != tc.after {
					t.Errorf("online file reads %q, want %q", got, tc.after)
				}
			}
		})
	}
}

// TestOfflineEBUSYHint checks the error tells the user what to do.
func TestOfflineEBUSYHint(t *testing.T) {
	c := NewController(tree(t, guest4()))
	c.write = func(string, []byte) error { return syscall.EBUSY }
	err := c.Offline(1)
	if err == nil || !strings.Contains(err.Error(), "retry later") {
		t.Errorf("EBUSY error gives no advice: %v", err)
	}
}

func TestOnline(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   func(map[string]string)
		cpu     int
		write   func(path string, data []byte) error
		wantIs  error
		wantSub string
		after   string
	}{
		{name: "offline cpu", cpu: 3, after: "1"},
		{name: "already online", cpu: 1, write: failWrite, after: "1"},
		{name: "cpu0 without online file counts as online", cpu: 0, write: failWrite},
		{name: "write accepted but cpu stays offline", cpu: 3, after: "0",
			write:  func(string, []byte) error { return nil },
			wantIs: ErrStillOffline},
		{name: "kernel refuses", cpu: 3, after: "0",
			write:  func(string, []byte) error { return syscall.EIO },
			wantIs: syscall.EIO, wantSub: "writing 1 to"},
		{name: "out of range", cpu: proto.MaxCPUs + 1, wantIs: ErrNoCPU},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := guest4()
			if tc.files != nil {
				tc.files(files)
			}
			root := tree(t, files)
			c := NewController(root)
			if tc.write != nil {
				c.write = tc.write
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := c.Online(ctx, tc.cpu)
			wantErr := tc.wantIs != nil || tc.wantSub != ""
			switch {
			case !wantErr && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case wantErr && err == nil:
				t.Fatal("no error")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
			if tc.wantSub != "" && !strings.Contains(err.Error(), tc.wantSub) {
				t.Errorf("error %q does not mention %q", err, tc.wantSub)
			}
			if tc.after != "" {
				if got := readOnline(t, root, "cpu"+strconv.Itoa(tc.cpu)); got != tc.after {
					t.Errorf("online file reads %q, want %q", got, tc.after)
				}
			}
		})
	}
}

// TestOnlineWaitsForHotAdd: the ACPI handler creates cpuN after the
// hypervisor plugs it; Online must wait for it rather than fail.
func TestOnlineWaitsForHotAdd(t *testing.T) {
	root := tree(t, guest4())
	c := NewController(root)
	dir := filepath.Join(root, "devices", "system", "cpu", "cpu4")
	done := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			done <- err
			return
		}
		// Rename so Online never sees a half-written file; sysfs
		// attributes appear with their content.
		tmp := filepath.Join(root, "online.tmp")
		if err := os.WriteFile(tmp, []byte("0\n"), 0o644); err != nil {
			done <- err
			return
		}
		done <- os.Rename(tmp, filepath.Join(dir, "online"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.Online(ctx, 4); err != nil {
		t.Fatalf("Online: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("returned after %v, before the CPU appeared", waited)
	}
	if got := readOnline(t, root, "cpu4"); got != "1" {
		t.Errorf("cpu4/online reads %q, want 1", got)
	}
}

func TestOnlineTimesOut(t *testing.T) {
	c := NewController(tree(t, guest4()))
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	err := c.Online(ctx, 5)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v is not context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "cpu5/online") {
		t.Errorf("error %q does not name the file it waited for", err)
	}
}

func TestOnlineCancelledBeforeStart(t *testing.T) {
	c := NewController(tree(t, guest4()))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Online(ctx, 5); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v is not context.Canceled", err)
	}
	// A CPU that needs no waiting still succeeds on a cancelled context:
	// the write is quick and cannot be interrupted halfway anyway.
	if err := c.Online(ctx, 3); err != nil {
		t.Fatalf("Online(3): %v", err)
	}
}

// TestWriteAttrNeverCreates: writeAttr must not invent sysfs files.
func TestWriteAttrNeverCreates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "online")
	err := writeAttr(p, []byte("1\n"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error %v is not ErrNotExist", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("writeAttr created %s", p)
	}
}

func failWrite(path string, _ []byte) error {
	panic("unexpected write to " + path)
}

package testvm

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// MakeExt4 writes a raw ext4 image of the directory dir to img with
// mkfs.ext4 -d: no loop device, no mount, seconds for a rootfs. The image
// is sized to the tree plus a quarter plus freeMB of free space; it is
// sparse, so unused space costs nothing on the host.
func MakeExt4(ctx context.Context, dir, img string, freeMB int) error {
	mkfs, err := lookTool("mkfs.ext4", "e2fsprogs")
	if err != nil {
		return err
	}
	var used int64
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		used += 4096 // inode and directory entries, roughly
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				used += (fi.Size() + 4095) &^ 4095
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sizing %s: %w", dir, err)
	}
	sizeMB := used*5/4/(1<<20) + int64(freeMB) + 16
	os.Remove(img)
	// -E root_owner: the image's / is root's whatever the caller's uid.
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-E", "root_owner=0:0",
		"-d", dir, img, strconv.FormatInt(sizeMB, 10)+"M")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 -d %s %s: %v: %s", dir, img, err, truncate(strings.TrimSpace(string(out)), 2000))
	}
	return nil
}

// DiskArgs are the QEMU arguments attaching img as the next virtio disk
// (/dev/vda for the first, /dev/vdb for the second, …) for Config.ExtraArgs.
// The root disk of a rootfs guest is the first, with KernelArgs
// "root=/dev/vda rw".
func DiskArgs(img string, readOnly bool) []string {
	spec := "file=" + img + ",format=raw,if=virtio,cache=unsafe"
	if readOnly {
		spec += ",readonly=on"
	}
	return []string{"-drive", spec}
}

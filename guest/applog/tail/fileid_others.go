//go:build !unix

package tail

import "os"

// keyOf: without inodes there is no rotation detection; the agent runs on Linux.
func keyOf(fi os.FileInfo) (fileKey, bool) { return fileKey{}, false }

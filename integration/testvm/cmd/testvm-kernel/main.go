// Command testvm-kernel fetches the guest kernel used by the integration
// tests into the cache (what testvm.EnsureKernel does on first use), so
// integration/setup-host.sh can warm the cache while the network is there.
// It prints the kernel's version, vmlinuz and modules directory.
//
// It must stay a thin wrapper: the cache layout belongs to package testvm.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/hotplugheaven/hotplug/integration/testvm"
)

func main() {
	cache := flag.String("cache", "", "cache directory (default $HOTPLUG_CACHE, else <repo>/build/cache)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	k, err := testvm.EnsureKernel(ctx, *cache)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testvm-kernel:", err)
		os.Exit(1)
	}
	fmt.Printf("version=%s\nvmlinuz=%s\nmodules=%s\n", k.Version, k.Vmlinuz, k.ModulesDir)
}

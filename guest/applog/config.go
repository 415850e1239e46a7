package applog

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/hotplugheaven/hotplug/guest/applog/parse"
	"github.com/hotplugheaven/hotplug/guest/applog/tail"
	"github.com/hotplugheaven/hotplug/guest/cgroup"
	"github.com/hotplugheaven/hotplug/proto"
)

// DefaultDir is where the agent looks for application configs.
const DefaultDir = "/etc/hotplug-agent/apps.d"

// maxConfigBytes bounds one application config file.
const maxConfigBytes = 1 << 20

// fileApp is one apps.d/*.toml file as written.
type fileApp struct {
	Name           string   `toml:"name"`
	Path           string   `toml:"path"`
	Format         string   `toml:"format"`
	DurationUnit   string   `toml:"duration_unit"`
	DurationSource string   `toml:"duration_source"`
	DropStatuses   []any    `toml:"drop_statuses"`
	TimeFormat     string   `toml:"time_format"`
	Regex          string   `toml:"regex"`
	ReadFromStart  bool     `toml:"read_from_start"`
	MaxLineBytes   int      `toml:"max_line_bytes"`
	Units          []string `toml:"units"`
	SLA            struct {
		Mean       string `toml:"mean"`
		Percentile any    `toml:"percentile"`
		Target     string `toml:"target"`
	} `toml:"sla"`
	Fields parse.Fields `toml:"fields"`
}

// App is one application's validated configuration.
type App struct {
	// File is where the configuration came from.
	File string
	Name string
	// Path is the log file or glob.
	Path string
	// Parse configures the parser.
	Parse parse.Options
	// Drop marks the statuses that count as dropped requests.
	Drop          [1000]bool
	ReadFromStart bool
	MaxLineBytes  int
	// SLA: a mean response time, or a percentile in (0,1) and its target;
	// seconds, zero when not set.
	SLAMean, SLAPercentile, SLATarget float64
	// Units are the systemd units whose cgroups' CPU time is the
	// application's (nginx.service, php8.2-fpm.service); none: the host
	// shares the VM's busy time by request counts.
	Units []string
}

// maxUnits bounds the units of one application.
const maxUnits = 16

// ConfigError names the file and key of a bad configuration.
type ConfigError struct {
	File, Key, Msg string
}

func (e *ConfigError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
}

var units = map[string]float64{"s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}

// LoadFile reads and checks one application config.
func LoadFile(path string) (App, error) {
	bad := func(key, format string, args ...any) (App, error) {
		return App{}, &ConfigError{File: path, Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	f, err := os.Open(path)
	if err != nil {
		return App{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return App{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxConfigBytes {
		return bad("", "larger than %d bytes; is this an application config?", maxConfigBytes)
	}
	var fa fileApp
	md, err := toml.Decode(string(b), &fa)
	if err != nil {
		return bad("", "%v", err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		return bad(u[0].String(), "unknown key (known: name, path, format, duration_unit, duration_source, drop_statuses, time_format, regex, read_from_start, max_line_bytes, units, [sla] mean/percentile/target, [fields] time/date/status/duration)")
	}
	a := App{File: path, Name: fa.Name, Path: fa.Path, ReadFromStart: fa.ReadFromStart, MaxLineBytes: fa.MaxLineBytes}
	if a.Name == "" {
		a.Name = strings.TrimSuffix(filepath.Base(path), ".toml")
	}
	if !proto.ValidAppName(a.Name) {
		return bad("name", "%q: use 1-64 letters, digits, '.', '_' or '-'", a.Name)
	}
	if a.Path == "" {
		return bad("path", "required: the access log, e.g. \"/var/log/nginx/access.log\" (a glob is allowed)")
	}
	if !filepath.IsAbs(a.Path) {
		return bad("path", "%q must be absolute", a.Path)
	}
	if _, err := filepath.Match(a.Path, ""); err != nil {
		return bad("path", "%q is not a valid glob: %v", a.Path, err)
	}
	if fa.Format == "" {
		return bad("format", "required: one of %s", strings.Join(parse.Formats(), ", "))
	}
	if _, ok := map[string]bool{"": true, "request": true, "upstream": true}[fa.DurationSource]; !ok {
		return bad("duration_source", "must be \"request\" or \"upstream\", got %q", fa.DurationSource)
	}
	a.Parse = parse.Options{Format: fa.Format, Upstream: fa.DurationSource == "upstream", Fields: fa.Fields,
		TimeFormat: fa.TimeFormat, Regex: fa.Regex}
	if fa.DurationUnit != "" {
		u, ok := units[fa.DurationUnit]
		if !ok {
			return bad("duration_unit", "must be s, ms, us or ns, got %q", fa.DurationUnit)
		}
		if !parse.HasDuration(fa.Format) {
			return bad("duration_unit", "format %s has no duration field", fa.Format)
		}
		a.Parse.Unit = u
	}
	if fa.Regex != "" && fa.Format != "regex" {
		return bad("regex", "only for format = \"regex\"")
	}
	if fa.TimeFormat != "" && fa.Format != "regex" && fa.Format != "json" {
		return bad("time_format", "only for the json and regex formats")
	}
	if fa.Fields != (parse.Fields{}) && fa.Format != "json" && fa.Format != "w3c" {
		return bad("fields", "only for the json and w3c formats")
	}
	if fa.Fields.Date != "" && fa.Format != "w3c" {
		return bad("fields.date", "only for the w3c format")
	}
	if _, err := parse.New(a.Parse); err != nil {
		key := "format"
		switch {
		case fa.Format == "regex" && fa.Regex == "" || strings.Contains(err.Error(), "regular expression"):
			key = "regex"
		case strings.Contains(err.Error(), "time format"):
			key = "time_format"
		case strings.Contains(err.Error(), "upstream"):
			key = "duration_source"
		}
		return bad(key, "%v", errors.Unwrap(err))
	}
	if a.MaxLineBytes == 0 {
		a.MaxLineBytes = tail.DefaultMaxLineBytes
	}
	if a.MaxLineBytes < 256 || a.MaxLineBytes > 16<<20 {
		return bad("max_line_bytes", "must be in [256, 16777216], got %d", a.MaxLineBytes)
	}
	if len(fa.Units) > maxUnits {
		return bad("units", "%d units, at most %d", len(fa.Units), maxUnits)
	}
	for i, u := range fa.Units {
		if !cgroup.ValidUnit(u) {
			return bad(fmt.Sprintf("units[%d]", i), "%q is not a systemd unit name (e.g. \"nginx.service\")", u)
		}
	}
	a.Units = fa.Units
	drops := fa.DropStatuses
	if drops == nil {
		drops = []any{"5xx", "429"}
	}
	for i, d := range drops {
		if err := markDrop(&a.Drop, d); err != nil {
			return bad(fmt.Sprintf("drop_statuses[%d]", i), "%v", err)
		}
	}
	if err := a.sla(&fa); err != nil {
		err.File = path
		return App{}, err
	}
	return a, nil
}

func markDrop(drop *[1000]bool, d any) error {
	switch v := d.(type) {
	case int64:
		if v < 0 || v > 999 {
			return fmt.Errorf("status %d outside 0..999", v)
		}
		drop[v] = true
		return nil
	case string:
		if len(v) == 3 && v[0] >= '1' && v[0] <= '5' && (v[1:] == "xx" || v[1:] == "XX") {
			c := int(v[0]-'0') * 100
			for s := c; s < c+100; s++ {
				drop[s] = true
			}
			return nil
		}
		if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 999 {
			drop[n] = true
			return nil
		}
	}
	return fmt.Errorf("%v is neither a status (429, \"503\") nor a class (\"5xx\")", d)
}

func seconds(key, s string) (float64, *ConfigError) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > 24*time.Hour {
		return 0, &ConfigError{Key: key, Msg: fmt.Sprintf("%q: want a duration in (0, 24h], e.g. \"250ms\"", s)}
	}
	return d.Seconds(), nil
}

func (a *App) sla(fa *fileApp) *ConfigError {
	s := fa.SLA
	switch {
	case s.Mean == "" && s.Percentile == nil && s.Target == "":
		return nil
	case s.Mean != "" && (s.Percentile != nil || s.Target != ""):
		return &ConfigError{Key: "sla", Msg: "either mean, or percentile and target, not both"}
	case s.Mean != "":
		v, err := seconds("sla.mean", s.Mean)
		a.SLAMean = v
		return err
	case s.Percentile == nil || s.Target == "":
		return &ConfigError{Key: "sla", Msg: "a percentile SLA needs both percentile (e.g. \"p95\") and target (e.g. \"300ms\")"}
	}
	var p float64
	switch v := s.Percentile.(type) {
	case float64:
		p = v
	case string:
		f, err := strconv.ParseFloat(strings.TrimPrefix(strings.TrimPrefix(v, "p"), "P"), 64)
		if err != nil {
			p = math.NaN()
		} else {
			p = f / 100
		}
	default:
		p = math.NaN()
	}
	if !(p > 0 && p < 1) {
		return &ConfigError{Key: "sla.percentile", Msg: fmt.Sprintf("%v: want \"p50\"…\"p99.9\" or a fraction in (0,1) such as 0.95", s.Percentile)}
	}
	v, err := seconds("sla.target", s.Target)
	a.SLAPercentile, a.SLATarget = p, v
	return err
}

// LoadDir reads every *.toml in dir, in name order. A missing directory
// means no application (gray-box mode off). All bad files are reported.
func LoadDir(dir string) ([]App, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("application configs: %w", err)
	}
	var files []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".toml") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files)
	var apps []App
	var errs []error
	names := map[string]string{}
	for _, f := range files {
		a, err := LoadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if other, ok := names[a.Name]; ok {
			errs = append(errs, &ConfigError{File: f, Key: "name", Msg: fmt.Sprintf("%q is already used by %s", a.Name, other)})
			continue
		}
		names[a.Name] = f
		apps = append(apps, a)
	}
	if len(apps) > proto.MaxApps {
		errs = append(errs, fmt.Errorf("%s: %d applications, at most %d fit in a report", dir, len(apps), proto.MaxApps))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return apps, nil
}

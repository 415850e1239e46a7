package sim

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// WriteJSON writes {"policies":[…]}, one object per policy.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Policies []Result `json:"policies"`
	}{r.Results})
}

// csvHeader matches the JSON names.
var csvHeader = []string{"policy", "vms", "vcpu_hours", "vcpu_hours_vs_requested", "vcpu_hours_vs_oracle",
	"overload_time_fraction", "actions_per_vm_day", "shortfall_p50_cpus", "shortfall_p99_cpus", "vm_overload_fraction_p99"}

// WriteCSV writes a header row and one row per policy, full precision.
func WriteCSV(w io.Writer, r *Report) error {
	cw := csv.NewWriter(w)
	cw.Write(csvHeader)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for _, x := range r.Results {
		cw.Write([]string{x.Policy, strconv.FormatInt(x.VMs, 10), f(x.VCPUHours), f(x.VsRequested), f(x.VsOracle),
			f(x.OverloadTimeFraction), f(x.ActionsPerVMDay), f(x.ShortfallP50), f(x.ShortfallP99), f(x.VMOverloadP99)})
	}
	cw.Flush()
	return cw.Error()
}

// WriteTable writes a Markdown table, aligned so it reads as well in a
// terminal as in the README.
func WriteTable(w io.Writer, r *Report) error {
	head := []string{"policy", "VMs", "vCPU-hours", "vs requested", "vs oracle", "overload time",
		"actions/VM-day", "shortfall p50", "shortfall p99", "VM overload p99"}
	rows := [][]string{head}
	for _, x := range r.Results {
		rows = append(rows, []string{x.Policy, strconv.FormatInt(x.VMs, 10), fmt.Sprintf("%.0f", x.VCPUHours),
			fmt.Sprintf("%.3f", x.VsRequested), fmt.Sprintf("%.3f", x.VsOracle),
			fmt.Sprintf("%.2f %%", 100*x.OverloadTimeFraction), fmt.Sprintf("%.1f", x.ActionsPerVMDay),
			fmt.Sprintf("%.2f", x.ShortfallP50), fmt.Sprintf("%.2f", x.ShortfallP99),
			fmt.Sprintf("%.1f %%", 100*x.VMOverloadP99)})
	}
	_, err := io.WriteString(w, markdownTable(rows))
	return err
}

// markdownTable aligns rows (the first is the header) so they read as well
// in a terminal as in the README: the first column left, the others right.
func markdownTable(rows [][]string) string {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i, c := range cells {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if i == 0 {
				b.WriteString(" " + c + pad + " |")
			} else {
				b.WriteString(" " + pad + c + " |")
			}
		}
		b.WriteString("\n")
	}
	line(rows[0])
	b.WriteString("|")
	for i, wd := range width {
		if i == 0 {
			b.WriteString(" " + strings.Repeat("-", wd) + " |")
		} else {
			b.WriteString(" " + strings.Repeat("-", wd-1) + ": |")
		}
	}
	b.WriteString("\n")
	for _, row := range rows[1:] {
		line(row)
	}
	return b.String()
}

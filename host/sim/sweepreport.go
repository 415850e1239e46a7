package sim

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// WriteSweepJSON writes the report: every frontier's points and its
// readings at the matched levels (null where it does not reach one).
func WriteSweepJSON(w io.Writer, r *SweepReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteSweepCSV writes one row per frontier point of every group, bounds
// included, full precision; on_envelope says whether the point is on the
// frontier's lower envelope.
func WriteSweepCSV(w io.Writer, r *SweepReport) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"group", "policy", "knob", "setting", "vcpu_hours_vs_oracle", "overload_time_fraction", "actions_per_vm_day", "on_envelope"})
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for _, g := range r.Groups {
		for _, fr := range g.Frontiers {
			on := onEnvelope(&fr)
			for _, p := range fr.Points {
				cw.Write([]string{g.Name, fr.Policy, fr.Knob, p.Setting, f(p.VsOracle), f(p.OverloadTimeFraction),
					f(p.ActionsPerVMDay), strconv.FormatBool(on[p.Setting])})
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

func onEnvelope(f *Frontier) map[string]bool {
	on := map[string]bool{}
	for _, p := range f.Envelope() {
		on[p.Setting] = true
	}
	return on
}

// WriteSweepTable writes Markdown tables: for all inputs together (or the
// only one), each frontier's vCPU-hours ÷ the oracle's at every matched
// level and each policy's figure over the P(need | previous need) bound;
// with several inputs, one table per level with a row per input and the
// policy lowest there; then the frontier points behind the first table.
func WriteSweepTable(w io.Writer, r *SweepReport) error {
	var b strings.Builder
	total := r.Total()
	markov := frontierIndex(total, BoundMarkov)

	head := []string{"vCPU-hours ÷ oracle's"}
	for _, l := range r.Levels {
		head = append(head, "at "+pctLevel(l))
	}
	rows := [][]string{head}
	for i, f := range total.Frontiers {
		row := []string{cell(f.Policy)}
		for j := range r.Levels {
			row = append(row, ratio(total.Matched[i][j].VsOracle))
		}
		rows = append(rows, row)
	}
	b.WriteString(markdownTable(rows))

	if markov >= 0 {
		head := []string{"÷ " + cell(BoundMarkov)}
		for _, l := range r.Levels {
			head = append(head, "at "+pctLevel(l))
		}
		rows := [][]string{head}
		for i, f := range total.Frontiers {
			if f.Hindsight {
				continue
			}
			row := []string{cell(f.Policy)}
			for j := range r.Levels {
				row = append(row, over(total.Matched[i][j].VsOracle, total.Matched[markov][j].VsOracle))
			}
			rows = append(rows, row)
		}
		b.WriteString("\n")
		b.WriteString(markdownTable(rows))
	}

	if len(r.Groups) > 1 {
		for j, l := range r.Levels {
			head := []string{"at " + pctLevel(l)}
			for _, f := range total.Frontiers {
				if !f.Hindsight || f.Policy == BoundMarkov {
					head = append(head, cell(f.Policy))
				}
			}
			head = append(head, "lowest policy")
			rows := [][]string{head}
			for _, g := range r.Groups {
				row := []string{g.Name}
				for i, f := range g.Frontiers {
					if !f.Hindsight || f.Policy == BoundMarkov {
						row = append(row, ratio(g.Matched[i][j].VsOracle))
					}
				}
				rows = append(rows, append(row, lowest(&g, j)))
			}
			b.WriteString("\n")
			b.WriteString(markdownTable(rows))
		}
	}

	rows = [][]string{{"policy", "setting", "vCPU-hours ÷ oracle's", "overload time", "actions/VM-day", "on envelope"}}
	for _, f := range total.Frontiers {
		if f.Hindsight {
			continue
		}
		on := onEnvelope(&f)
		for _, p := range f.Points {
			mark := ""
			if on[p.Setting] {
				mark = "yes"
			}
			rows = append(rows, []string{f.Policy, p.Setting, fmt.Sprintf("%.3f", p.VsOracle),
				fmt.Sprintf("%.2f %%", 100*p.OverloadTimeFraction), fmt.Sprintf("%.1f", p.ActionsPerVMDay), mark})
		}
	}
	b.WriteString("\n")
	b.WriteString(markdownTable(rows))
	_, err := io.WriteString(w, b.String())
	return err
}

func frontierIndex(g *SweepGroup, name string) int {
	for i, f := range g.Frontiers {
		if f.Policy == name {
			return i
		}
	}
	return -1
}

// lowest names the runnable policy with the fewest vCPU-hours at level j
// of g, "—" when none reaches it.
func lowest(g *SweepGroup, j int) string {
	best, name := 0.0, "—"
	for i, f := range g.Frontiers {
		if v := g.Matched[i][j].VsOracle; !f.Hindsight && v != nil && (name == "—" || *v < best) {
			best, name = *v, f.Policy
		}
	}
	return name
}

// cell escapes a Markdown table cell's pipes.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func pctLevel(l float64) string { return strconv.FormatFloat(100*l, 'g', -1, 64) + " %" }

func ratio(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.3f", *v)
}

func over(v, by *float64) string {
	if v == nil || by == nil {
		return "—"
	}
	return fmt.Sprintf("%.3f", *v / *by)
}

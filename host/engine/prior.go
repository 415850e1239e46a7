package engine

// ForecastPriorTable is the pooled prior of the predictive mode (see
// Policy.ForecastPrior): ForecastPriorTable[k+7] is the probability that
// the next interval needs more than M + k vCPUs, where M is the weighted
// median of the vCPUs the VM's window needed (ceil(demand), each sample
// weighed as in the forecast), for k = −7 … +7. It depends on the VM's
// level only through the offset, so it holds for any VM size; offsets
// beyond ±7 take the end values.
//
// It is learned from the 1,052 PlanetLab VMs of the development day
// 2011-03-03 (300 s samples, 8 requested vCPUs, PredictivePolicy's 4 h
// half-life and 144-sample window), every sample after a VM's first,
// counting for offset k only the samples where M + k was a size below the
// requested 8 (the traces cap demand there), then made non-increasing.
// It is data, not I/O: host/sim's TestForecastPriorIsDevDays re-derives
// it from the day and prints the table to paste when it differs:
//
//	go test ./host/sim -run TestForecastPriorIsDevDays -v
var ForecastPriorTable = [...]float64{
	0.999167, // -7
	0.999112, // -6
	0.991082, // -5
	0.979996, // -4
	0.958387, // -3
	0.914409, // -2
	0.703419, // -1
	0.125265, // +0
	0.031091, // +1
	0.013945, // +2
	0.007120, // +3
	0.004152, // +4
	0.002192, // +5
	0.001002, // +6
	0.001002, // +7
}

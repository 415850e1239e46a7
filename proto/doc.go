// Package proto is the wire contract between hotplug-agent (in the guest) and
// hotplug-actuator (on the host).
//
// Messages are msgpack maps (github.com/vmihailenco/msgpack/v5) carried in
// length-prefixed frames:
//
//	+------+------+------+----------+-----------------------+
//	| 'H'  | 'P'  | type | reserved | length (uint32, BE)   |  8 bytes
//	+------+------+------+----------+-----------------------+
//	| msgpack payload, at most MaxPayload bytes             |
//	+-------------------------------------------------------+
//
// The agent opens every connection with a Hello that carries the range of
// protocol versions it speaks; the actuator answers with a Welcome naming the
// version both will use, or an error. Unknown map keys are ignored so either
// side may add fields without a version bump; removing or changing the meaning
// of a field needs a new version.
//
// Everything a guest sends is untrusted. Decoding checks the frame size before
// allocating, walks the msgpack structure without recursion to bound nesting
// and declared lengths, and Validate methods reject values no honest agent can
// produce (NaN, negative rates, CPU ids past MaxCPUs). No input makes this
// package panic; see the fuzz targets.
//
// This package must not import anything from guest/ or host/.
package proto

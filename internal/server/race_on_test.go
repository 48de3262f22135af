//go:build race

package server

// raceEnabled relaxes timing assertions: the race detector slows inflating
// and scanning a 64 MiB zip bomb about tenfold.
const raceEnabled = true

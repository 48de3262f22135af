module github.com/mamori-edr/mamori

go 1.26.0

require golang.org/x/sys v0.50.0

require (
	github.com/cilium/ebpf v0.22.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
)

tool github.com/cilium/ebpf/cmd/bpf2go

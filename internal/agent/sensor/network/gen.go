package network

//go:generate go tool bpf2go -go-package network -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type net_event -type flow_key -type flow_val network ../bpf/network.c -- -I../bpf/include

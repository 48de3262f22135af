package process

//go:generate go tool bpf2go -go-package process -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type event_hdr process ../bpf/process.c -- -I../bpf/include

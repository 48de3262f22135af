package server

import (
	"compress/gzip"
	"io"
	"os"
	"strings"
)

func newGzipWriterBest(w io.Writer) *gzip.Writer {
	zw, _ := gzip.NewWriterLevel(w, gzip.BestCompression)
	return zw
}

func readFileTrim(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

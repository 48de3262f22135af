package server

import (
	"errors"
	"sort"

	"github.com/mamori-edr/mamori/internal/store"
)

// DefaultEventEngine is the event store used when Options.EventEngine is empty.
const DefaultEventEngine = "sqlite"

// eventEngines maps an engine name to the function opening it in a data
// directory. Engines behind build tags register from their own file.
var eventEngines = map[string]func(dir string) (store.EventStore, error){}

// openSQLiteState opens the embedded state store; set by the sqlite engine file.
var openSQLiteState = func(dir string) (store.StateStore, error) {
	return nil, errors.New("no embedded state store compiled in")
}

// EventEngines lists the event store engines compiled into this binary.
func EventEngines() []string {
	names := make([]string, 0, len(eventEngines))
	for k := range eventEngines {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

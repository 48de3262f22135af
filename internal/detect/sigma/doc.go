// Package sigma loads Sigma detection rules (title, logsource, detection,
// condition, filters and correlation rules) and compiles them into matchers
// that evaluate events without compiling anything per event.
//
// It exists so that one engine serves the whole SigmaHQ set on the agent and
// on the server, and so that a rule Mamori cannot evaluate is reported at
// load or compile time instead of silently never firing.
//
// The trap: Sigma values are case-insensitive glob patterns, not literals and
// not regular expressions. `*` and `?` are wildcards unless escaped with `\`,
// a lone `\` before any other character is a plain backslash, and only the
// `re` modifier makes a value a (case-sensitive) regular expression. A field
// name the mapping cannot provide must be rejected with ErrUnmappedField by
// the CompileOptions.FieldMap hook rather than be left to evaluate as absent.
package sigma

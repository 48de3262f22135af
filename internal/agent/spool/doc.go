// Package spool is the agent's durable, bounded, append-only queue of events
// waiting for the server.
//
// It exists so that no event the sensor produced is lost while the server is
// unreachable or the agent is killed: every event is written to a segment
// file before it is sent, and a segment is deleted only after the server has
// acknowledged, durably, every record in it. When the disk budget is
// exhausted the oldest segment is dropped and the loss is counted, with its
// sequence range, so it is reported rather than silent.
//
// The trap: sequence numbers are the spool's, not the sender's. They are
// consecutive and never reused, even after every segment has been acked and
// deleted and the agent restarted, because the server drops a record whose
// (agent, seq) it has already stored. Code that renumbers records, or that
// deletes the spool directory to "clean up", makes the server discard new
// events as duplicates. A gap in the sequence read back is not a bug in the
// reader: it is data dropped on overflow or lost to corruption, and Loss says
// how much.
//
// On-disk layout of a spool directory:
//
//	lock                        flock(2)ed while a Spool is open
//	state                       acked seq, next seq, loss counters, known gaps (written atomically)
//	00000000000000000001.seg    segments, named by the seq of their first record
//
// A segment starts with a 24-byte header (magic "MMRSPOOL", version, first
// seq, CRC32C of the header) followed by records: payload length (uint32),
// CRC32C over length, seq and payload (uint32), seq (uint64), payload; all
// little endian. A record that fails its checksum is skipped and the reader
// resynchronises on the next valid record; the records in between are
// counted as corrupt exactly, from the sequence gap.
package spool

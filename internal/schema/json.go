package schema

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the JSON form of e to dst: the same document
// json.Marshal produces, without reflection. The agent encodes every kernel
// event, and json.Marshal was the largest part of its CPU under an exec
// storm. TestAppendJSONMatchesMarshal fills every field of Event by
// reflection and compares, so a field added to the schema but not here fails
// the build's tests.
func (e *Event) AppendJSON(dst []byte) []byte {
	if !jsonTimeOK(e.Time) || (e.Process != nil && !jsonTimeOK(e.Process.StartTime)) {
		// Years json.Marshal refuses: let it say so in the same way.
		b, err := json.Marshal(e)
		if err != nil {
			return append(dst, "null"...)
		}
		return append(dst, b...)
	}
	dst = append(dst, `{"schema":`...)
	dst = strconv.AppendInt(dst, int64(e.Schema), 10)
	if e.Tenant != "" {
		dst = appendKeyString(dst, `,"tenant":`, e.Tenant)
	}
	if e.HostID != "" {
		dst = appendKeyString(dst, `,"host_id":`, e.HostID)
	}
	dst = appendKeyString(dst, `,"boot_id":`, e.BootID)
	if e.Seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, e.Seq, 10)
	}
	dst = append(dst, `,"time":`...)
	dst = appendTime(dst, e.Time)
	dst = appendKeyString(dst, `,"type":`, string(e.Type))
	if p := e.Process; p != nil {
		dst = append(dst, `,"process":`...)
		dst = p.appendJSON(dst)
	}
	if a := e.Parent; a != nil {
		dst = appendKeyString(dst, `,"parent":{"entity_id":`, a.EntityID)
		dst = appendKeyUint(dst, `,"pid":`, uint64(a.PID))
		if a.Exe != "" {
			dst = appendKeyString(dst, `,"exe":`, a.Exe)
		}
		if len(a.Args) > 0 {
			dst = appendStrings(append(dst, `,"args":`...), a.Args)
		}
		dst = append(dst, '}')
	}
	if e.Loss != nil {
		// Rare: a loss report. Its map needs sorted keys; leave it to json.
		b, err := json.Marshal(e.Loss)
		if err == nil {
			dst = append(append(dst, `,"loss":`...), b...)
		}
	}
	if n := e.Network; n != nil {
		dst = n.appendJSON(append(dst, `,"network":`...))
	}
	return append(dst, '}')
}

func (p *Process) appendJSON(dst []byte) []byte {
	dst = appendKeyString(dst, `{"entity_id":`, p.EntityID)
	dst = appendKeyUint(dst, `,"pid":`, uint64(p.PID))
	dst = appendKeyUint(dst, `,"ppid":`, uint64(p.PPID))
	if p.ParentEntityID != "" {
		dst = appendKeyString(dst, `,"parent_entity_id":`, p.ParentEntityID)
	}
	dst = append(dst, `,"start_time":`...)
	dst = appendTime(dst, p.StartTime)
	if p.Name != "" {
		dst = appendKeyString(dst, `,"name":`, p.Name)
	}
	if p.Exe != "" {
		dst = appendKeyString(dst, `,"exe":`, p.Exe)
	}
	if len(p.Args) > 0 {
		dst = appendStrings(append(dst, `,"args":`...), p.Args)
	}
	if p.ArgsTruncated {
		dst = append(dst, `,"args_truncated":true`...)
	}
	if p.Cwd != "" {
		dst = appendKeyString(dst, `,"cwd":`, p.Cwd)
	}
	dst = appendKeyUint(dst, `,"uid":`, uint64(p.UID))
	dst = appendKeyUint(dst, `,"euid":`, uint64(p.EUID))
	dst = appendKeyUint(dst, `,"gid":`, uint64(p.GID))
	dst = appendKeyUint(dst, `,"egid":`, uint64(p.EGID))
	dst = appendKeyUint(dst, `,"login_uid":`, uint64(p.LoginUID))
	dst = appendKeyUint(dst, `,"session_id":`, uint64(p.SessionID))
	if p.User != "" {
		dst = appendKeyString(dst, `,"user":`, p.User)
	}
	if p.CgroupID != 0 {
		dst = appendKeyUint(dst, `,"cgroup_id":`, p.CgroupID)
	}
	if p.CgroupPath != "" {
		dst = appendKeyString(dst, `,"cgroup_path":`, p.CgroupPath)
	}
	if p.ContainerID != "" {
		dst = appendKeyString(dst, `,"container_id":`, p.ContainerID)
	}
	if h := p.Hash; h != nil {
		dst = append(dst, `,"hash":{`...)
		if h.SHA256 != "" {
			dst = appendKeyString(dst, `"sha256":`, h.SHA256)
			dst = append(dst, ',')
		}
		if h.MD5 != "" {
			dst = appendKeyString(dst, `"md5":`, h.MD5)
			dst = append(dst, ',')
		}
		dst = append(dst, `"size":`...)
		dst = strconv.AppendInt(dst, h.Size, 10)
		dst = appendKeyString(dst, `,"status":`, h.Status)
		dst = append(dst, '}')
	}
	if p.ExitCode != nil {
		dst = append(dst, `,"exit_code":`...)
		dst = strconv.AppendInt(dst, int64(*p.ExitCode), 10)
	}
	if p.ExitSignal != 0 {
		dst = append(dst, `,"exit_signal":`...)
		dst = strconv.AppendInt(dst, int64(p.ExitSignal), 10)
	}
	return append(dst, '}')
}

func (n *Network) appendJSON(dst []byte) []byte {
	dst = appendKeyString(dst, `{"family":`, n.Family)
	dst = appendKeyString(dst, `,"protocol":`, n.Protocol)
	dst = appendKeyString(dst, `,"direction":`, n.Direction)
	if n.Result != "" {
		dst = appendKeyString(dst, `,"result":`, n.Result)
	}
	if n.SrcIP != "" {
		dst = appendKeyString(dst, `,"src_ip":`, n.SrcIP)
	}
	if n.SrcPort != 0 {
		dst = appendKeyUint(dst, `,"src_port":`, uint64(n.SrcPort))
	}
	if n.DstIP != "" {
		dst = appendKeyString(dst, `,"dst_ip":`, n.DstIP)
	}
	dst = appendKeyUint(dst, `,"dst_port":`, uint64(n.DstPort))
	if n.Count != 0 {
		dst = appendKeyUint(dst, `,"count":`, n.Count)
	}
	if n.Summary {
		dst = append(dst, `,"summary":true`...)
	}
	if n.FirstTime != "" {
		dst = appendKeyString(dst, `,"first_time":`, n.FirstTime)
	}
	return append(dst, '}')
}

func jsonTimeOK(t time.Time) bool {
	y := t.Year()
	return y >= 0 && y <= 9999
}

func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

func appendKeyUint(dst []byte, key string, v uint64) []byte {
	return strconv.AppendUint(append(dst, key...), v, 10)
}

func appendKeyString(dst []byte, key, s string) []byte {
	return appendString(append(dst, key...), s)
}

func appendStrings(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as encoding/json does (HTML-safe escapes, invalid
// UTF-8 as U+FFFD, U+2028/U+2029 escaped).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

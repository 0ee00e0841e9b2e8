package sqldedup

import "time"

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

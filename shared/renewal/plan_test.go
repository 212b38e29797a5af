package renewal_test

import (
	"testing"
	"time"

	"github.com/certfleet/certfleet/shared/renewal"
)

// fixed returns a rnd that answers frac of n, and records the n asked.
func fixed(frac float64, asked *int64) func(int64) int64 {
	return func(n int64) int64 {
		if asked != nil {
			*asked = n
		}
		return int64(float64(n) * frac)
	}
}

func TestPlan(t *testing.T) {
	nb := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(90 * 24 * time.Hour)
	twoThirds := nb.Add(60 * 24 * time.Hour)
	now := nb.Add(10 * 24 * time.Hour)
	ws, we := nb.Add(59*24*time.Hour), nb.Add(61*24*time.Hour) // a 2-day window
	never := func(int64) int64 { t.Fatal("rnd called"); return 0 }

	for _, tc := range []struct {
		name   string
		window *renewal.Window
		now    time.Time
		rnd    func(int64) int64
		want   time.Time
	}{
		{"no window: 2/3 of the lifetime", nil, now, never, twoThirds},
		{"no window, 2/3 already past: as is", nil, na.Add(-time.Hour), never, twoThirds},
		{"invalid window, end = start", &renewal.Window{Start: ws, End: ws}, now, never, twoThirds},
		{"invalid window, end before start", &renewal.Window{Start: we, End: ws}, now, never, twoThirds},
		{"zero window", &renewal.Window{}, now, never, twoThirds},
		{"window ahead, rnd 0: start", &renewal.Window{Start: ws, End: we}, now, fixed(0, nil), ws},
		{"window ahead, rnd half: middle", &renewal.Window{Start: ws, End: we}, now, fixed(0.5, nil), ws.Add(24 * time.Hour)},
		{"window ahead, rnd n-1: just before end", &renewal.Window{Start: ws, End: we}, now, func(n int64) int64 { return n - 1 }, we.Add(-time.Nanosecond)},
		{"rnd above range: clamped", &renewal.Window{Start: ws, End: we}, now, func(n int64) int64 { return n + 5 }, we.Add(-time.Nanosecond)},
		{"rnd negative: clamped", &renewal.Window{Start: ws, End: we}, now, func(int64) int64 { return -5 }, ws},
		{"window begun, moment drawn ahead", &renewal.Window{Start: ws, End: we}, ws.Add(time.Hour), fixed(0.5, nil), ws.Add(24 * time.Hour)},
		{"window begun, moment drawn past: now", &renewal.Window{Start: ws, End: we}, ws.Add(time.Hour), fixed(0, nil), ws.Add(time.Hour)},
		{"window ended: now", &renewal.Window{Start: ws, End: we}, we.Add(time.Minute), never, we.Add(time.Minute)},
		{"window ends now: now", &renewal.Window{Start: ws, End: we}, we, never, we},
		{"window before the certificate, ended: now", &renewal.Window{Start: nb.Add(-2 * time.Hour), End: nb.Add(-time.Hour)}, now, never, now},
	} {
		got := renewal.Plan(nb, na, tc.window, tc.now, tc.rnd)
		if !got.Equal(tc.want) {
			t.Errorf("%s: Plan = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// rnd is asked for the window's length in nanoseconds.
func TestPlanAsksForTheWindowLength(t *testing.T) {
	ws := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var asked int64
	renewal.Plan(ws.Add(-60*24*time.Hour), ws.Add(30*24*time.Hour), &renewal.Window{Start: ws, End: ws.Add(time.Hour)}, ws.Add(-time.Hour), fixed(0.25, &asked))
	if asked != int64(time.Hour) {
		t.Errorf("rnd asked for %d, want %d", asked, int64(time.Hour))
	}
}

// With rnd nil, the moment is random but within the window.
func TestPlanDefaultRandom(t *testing.T) {
	ws := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	w := &renewal.Window{Start: ws, End: ws.Add(48 * time.Hour)}
	now := ws.Add(-time.Hour)
	seen := map[time.Time]bool{}
	for range 100 {
		got := renewal.Plan(ws.Add(-60*24*time.Hour), ws.Add(30*24*time.Hour), w, now, nil)
		if got.Before(w.Start) || !got.Before(w.End) {
			t.Fatalf("Plan = %s, outside [%s, %s)", got, w.Start, w.End)
		}
		seen[got] = true
	}
	if len(seen) < 90 {
		t.Errorf("only %d distinct moments in 100 plans", len(seen))
	}
}

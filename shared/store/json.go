package store

import (
	"context"
	"encoding/json"
	"fmt"
)

// GetJSON reads the item at k and decodes its JSON value into v. It returns
// the item (for its version) or ErrNotFound.
func GetJSON(ctx context.Context, s Store, k Key, v any) (Item, error) {
	it, err := s.Get(ctx, k)
	if err != nil {
		return Item{}, err
	}
	if err := json.Unmarshal(it.Value, v); err != nil {
		return Item{}, fmt.Errorf("store: decode %s: %w", k, err)
	}
	return it, nil
}

// JSONItem builds an item at k whose value is v encoded as JSON.
func JSONItem(k Key, v any) (Item, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Item{}, fmt.Errorf("store: encode %s: %w", k, err)
	}
	return Item{Key: k, Value: b}, nil
}

// DecodeJSON decodes an item's JSON value into v.
func DecodeJSON(it Item, v any) error {
	if err := json.Unmarshal(it.Value, v); err != nil {
		return fmt.Errorf("store: decode %s: %w", it.Key, err)
	}
	return nil
}

// DecodeEach decodes every item's JSON value as an R and returns view of
// each, in order: the usual way a listing turns stored records into what
// its caller may see.
func DecodeEach[R, T any](items []Item, view func(R) T) ([]T, error) {
	out := make([]T, 0, len(items))
	for _, it := range items {
		var rec R
		if err := DecodeJSON(it, &rec); err != nil {
			return nil, err
		}
		out = append(out, view(rec))
	}
	return out, nil
}

// PageJSON reads every item of q, all its pages, decoding each as an R:
// it returns view of those keep allows (all when keep is nil) from
// offset on, at most limit, and how many keep allows in all. It is the
// offset-and-total listing of one partition.
func PageJSON[R, T any](ctx context.Context, s Store, q Query, keep func(R) bool, view func(R) T, offset, limit int) ([]T, int, error) {
	out, total := []T{}, 0
	for {
		page, err := s.Query(ctx, q)
		if err != nil {
			return nil, 0, err
		}
		for _, it := range page.Items {
			var rec R
			if err := DecodeJSON(it, &rec); err != nil {
				return nil, 0, err
			}
			if keep != nil && !keep(rec) {
				continue
			}
			if total >= offset && len(out) < limit {
				out = append(out, view(rec))
			}
			total++
		}
		if q.Cursor = page.Cursor; q.Cursor == "" {
			return out, total, nil
		}
	}
}

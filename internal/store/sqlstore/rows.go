package sqlstore

import (
	"context"
	"fmt"
)

// queryAll runs a query and scans every row with scan: the one copy of
// the rows loop (close, scan errors, rows.Err). what names the query in
// errors ("list teams: ..."). The result is never nil, so an empty list
// encodes as [] in JSON.
func queryAll[T any](ctx context.Context, q queryer, what string, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

package sqldb

import (
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// rebinds caches PostgreSQL forms of queries: the same few hundred
// statements run over and over.
var rebinds sync.Map // string -> string

// rebind turns the "?" and "?N" placeholders queries are written with into
// PostgreSQL's "$N". Quoted text is left alone.
func (d *DB) rebind(q string) string {
	if d.dialect != Postgres {
		return q
	}
	if v, ok := rebinds.Load(q); ok {
		return v.(string)
	}
	out := Rebind(q)
	rebinds.Store(q, out)
	return out
}

// Rebind rewrites "?" placeholders as "$1", "$2"... and "?N" as "$N",
// outside quoted strings and identifiers.
func Rebind(q string) string {
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
			b.WriteByte(c)
		case c == '\'' || c == '"':
			quote = c
			b.WriteByte(c)
		case c == '?':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			b.WriteByte('$')
			if j > i+1 {
				b.WriteString(q[i+1 : j])
				i = j - 1
			} else {
				n++
				b.WriteString(strconv.Itoa(n))
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// args adapts argument values to the dialect. Flags are INTEGER columns 0/1
// in both schemas (SQLite has no boolean type), so PostgreSQL gets integers
// for Go bools; reading them back into a bool works through database/sql.
func (d *DB) args(args []any) []any {
	if d.dialect != Postgres {
		return args
	}
	for i, a := range args {
		if b, ok := a.(bool); ok {
			if b {
				args[i] = int64(1)
			} else {
				args[i] = int64(0)
			}
		}
	}
	return args
}

// IsUniqueViolation reports whether err is a unique or primary key
// constraint failing, on either dialect.
func IsUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// IsForeignKeyViolation reports whether err is a foreign key failing.
func IsForeignKeyViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23503"
	}
	return err != nil && strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
}

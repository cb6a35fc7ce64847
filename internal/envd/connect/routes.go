package connect

import "net/http"

// Routes maps the full paths of RPC methods ("/process.Process/Start")
// to their handlers. envd registers it on its ServeMux once per service
// prefix instead of once per method: a ServeMux registration parses the
// pattern, checks it against every other and records its caller's file
// and line (a stack walk), and envd starts once per sandbox, so the
// twenty-odd registrations were a measurable part of its start-up.
type Routes map[string]http.Handler

// Handle adds the method at path; a path given twice is a programming
// error and panics, as it does on a ServeMux.
func (r Routes) Handle(path string, h http.Handler) {
	if _, dup := r[path]; dup {
		panic("connect: method registered twice: " + path)
	}
	r[path] = h
}

// ServeHTTP calls the method's handler; an unknown method is a 404, as
// from a ServeMux without a route for it.
func (r Routes) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	h, ok := r[req.URL.Path]
	if !ok {
		http.NotFound(w, req)
		return
	}
	h.ServeHTTP(w, req)
}

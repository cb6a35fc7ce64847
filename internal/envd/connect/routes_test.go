package connect

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRoutes(t *testing.T) {
	r := Routes{}
	r.Handle("/svc.S/A", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	mux := http.NewServeMux()
	mux.Handle("/svc.S/", r)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/svc.S/A", http.StatusTeapot},
		{"/svc.S/B", http.StatusNotFound},
		{"/svc.S/", http.StatusNotFound},
		{"/svc.S/A/x", http.StatusNotFound},
	} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodPost, tc.path, nil))
		if w.Code != tc.want {
			t.Errorf("POST %s: status %d, want %d", tc.path, w.Code, tc.want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("registering a method twice did not panic")
		}
	}()
	r.Handle("/svc.S/A", http.NotFoundHandler())
}

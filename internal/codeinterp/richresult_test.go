package codeinterp

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// chartOf returns the one chart among lines' results, decoded.
func chartOf(t *testing.T, lines []line) map[string]any {
	t.Helper()
	var charts []map[string]any
	for _, r := range ofType(lines, "result") {
		if c, ok := r["chart"].(map[string]any); ok {
			charts = append(charts, c)
			if r.str("png") == "" {
				t.Errorf("chart result without its PNG: %v", keys(r))
			}
		}
	}
	if e := ofType(lines, "error"); len(e) > 0 {
		t.Fatalf("error: %v", e[0])
	}
	if len(charts) != 1 {
		var got [][]string
		for _, r := range ofType(lines, "result") {
			got = append(got, keys(r))
		}
		t.Fatalf("%d charts among results with %v", len(charts), got)
	}
	return charts[0]
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// jsonEq compares after a JSON round trip, so []any{1.0} equals [1].
func jsonEq(t *testing.T, what string, got, want any) {
	t.Helper()
	var g, w any
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	_ = json.Unmarshal(gb, &g)
	_ = json.Unmarshal(wb, &w)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s = %s, want %s", what, gb, wb)
	}
}

func TestChartsFromMatplotlib(t *testing.T) {
	requirePyModules(t, "matplotlib", "numpy")
	_, ts := newTestServer(t, Config{})
	run := func(code string) []line {
		return execute(t, ts.URL, map[string]any{"code": "import matplotlib.pyplot as plt\n" + code})
	}
	tests := []struct {
		name, code string
		want       map[string]any // fields of the chart compared exactly
	}{
		{"line", "plt.plot([1, 2, 3], [1, 4, 9], label='squares')\nplt.plot([1, 2], [5, 6])\n" +
			"plt.title('Growth'); plt.xlabel('Time (s)'); plt.ylabel('Size [m]')\nplt.show()", map[string]any{
			"type": "line", "title": "Growth", "x_label": "Time (s)", "y_label": "Size [m]", "x_unit": "s", "y_unit": "m",
			"x_scale": "linear", "y_scale": "linear",
			"elements": []any{
				map[string]any{"label": "squares", "points": [][]float64{{1, 1}, {2, 4}, {3, 9}}},
				map[string]any{"label": "Line 1", "points": [][]float64{{1, 5}, {2, 6}}},
			},
		}},
		{"scatter", "plt.scatter([1, 2], [3, 4], label='pts'); plt.title('S'); plt.show()", map[string]any{
			"type": "scatter", "title": "S",
			"elements": []any{map[string]any{"label": "pts", "points": [][]float64{{1, 3}, {2, 4}}}},
		}},
		{"bar", "plt.bar(['A', 'B'], [10, 20.5], label='Sold'); plt.title('Sales'); plt.xlabel('Author'); plt.ylabel('Books'); plt.show()", map[string]any{
			"type": "bar", "title": "Sales", "x_label": "Author", "y_label": "Books",
			"elements": []any{
				map[string]any{"label": "A", "group": "Sold", "value": 10},
				map[string]any{"label": "B", "group": "Sold", "value": 20.5},
			},
		}},
		{"horizontal bar: x_label names the categories", "plt.barh(['A', 'B'], [3, 4]); plt.xlabel('count'); plt.ylabel('name'); plt.show()", map[string]any{
			"type": "bar", "x_label": "name", "y_label": "count",
			"elements": []any{
				map[string]any{"label": "A", "group": "Group 0", "value": 3},
				map[string]any{"label": "B", "group": "Group 0", "value": 4},
			},
		}},
		{"pie", "fig, ax = plt.subplots(); ax.pie([90, 10], labels=['No', 'Yes'], autopct='%1.1f%%', startangle=90); ax.set_title('Wake up?'); plt.show()", map[string]any{
			"type": "pie", "title": "Wake up?",
			"elements": []any{
				map[string]any{"label": "No", "angle": 324, "radius": 1},
				map[string]any{"label": "Yes", "angle": 36, "radius": 1},
			},
		}},
		{"box and whisker", "fig, ax = plt.subplots(); ax.boxplot([[1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 40]], labels=['a', 'b']); ax.set_title('Box'); ax.set_ylabel('Score'); plt.show()", map[string]any{
			"type": "box_and_whisker", "title": "Box", "y_label": "Score",
			"elements": []any{
				map[string]any{"label": "a", "min": 1, "first_quartile": 2, "median": 3, "third_quartile": 4, "max": 5, "outliers": []any{}},
				map[string]any{"label": "b", "min": 2, "first_quartile": 3.25, "median": 4.5, "third_quartile": 5.75, "max": 6, "outliers": []any{40}},
			},
		}},
		{"unknown", "fig, ax = plt.subplots(); ax.add_artist(plt.Circle((0, 0), 1)); ax.set_title('Circle'); plt.show()", map[string]any{
			"type": "unknown", "title": "Circle", "elements": []any{},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := chartOf(t, run(tt.code))
			for k, want := range tt.want {
				jsonEq(t, k, c[k], want)
			}
		})
	}

	t.Run("superchart", func(t *testing.T) {
		c := chartOf(t, run("fig, axs = plt.subplots(1, 2); fig.suptitle('Two')\n"+
			"axs[0].plot([1, 2], [3, 4]); axs[0].set_title('L')\naxs[1].bar(['x'], [1]); axs[1].set_title('B')\nplt.show()"))
		jsonEq(t, "type", c["type"], "superchart")
		jsonEq(t, "title", c["title"], "Two")
		els, _ := c["elements"].([]any)
		if len(els) != 2 {
			t.Fatalf("elements %v", c["elements"])
		}
		first, second := els[0].(map[string]any), els[1].(map[string]any)
		jsonEq(t, "first", []any{first["type"], first["title"]}, []any{"line", "L"})
		jsonEq(t, "second", []any{second["type"], second["title"], second["elements"]}, []any{"bar", "B",
			[]any{map[string]any{"label": "x", "group": "Group 0", "value": 1}}})
	})
	t.Run("dates", func(t *testing.T) {
		c := chartOf(t, run("import datetime\nd = [datetime.date(2024, 1, 1), datetime.date(2024, 1, 2)]\nplt.plot(d, [1, 2]); plt.show()"))
		jsonEq(t, "x_scale", c["x_scale"], "datetime")
		el := c["elements"].([]any)[0].(map[string]any)
		jsonEq(t, "points", el["points"], []any{[]any{"2024-01-01", 1}, []any{"2024-01-02", 2}})
	})
	t.Run("blank figure has no chart", func(t *testing.T) {
		lines := run("fig, ax = plt.subplots(); fig")
		for _, r := range ofType(lines, "result") {
			if _, ok := r["chart"]; ok {
				t.Fatalf("blank figure gave a chart: %v", r["chart"])
			}
		}
	})
}

func TestDataFrameData(t *testing.T) {
	requirePyModules(t, "pandas")
	_, ts := newTestServer(t, Config{})
	lines := execute(t, ts.URL, map[string]any{"code": "import pandas as pd, numpy as np\n" +
		"pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', None], 'c': [0.5, np.nan, np.inf], 3: pd.to_datetime(['2024-01-01', None, '2024-01-03'])})"})
	r := ofType(lines, "result")
	if len(r) != 1 {
		t.Fatalf("results %v", lines)
	}
	if !strings.Contains(r[0].str("html"), "<table") {
		t.Errorf("html lost: %v", keys(r[0]))
	}
	jsonEq(t, "data", r[0]["data"], map[string]any{
		"a": []any{1, 2, 3},
		"b": []any{"x", "y", nil},
		"c": []any{0.5, nil, nil}, // NaN and infinity are not JSON
		"3": []any{"2024-01-01T00:00:00", nil, "2024-01-03T00:00:00"},
	})
	// A Series is not a DataFrame.
	if r := ofType(execute(t, ts.URL, map[string]any{"code": "pd.Series([1, 2])"}), "result"); len(r) != 1 || r[0]["data"] != nil {
		t.Errorf("series result %v", r)
	}
}

func TestImageSaveDisplays(t *testing.T) {
	requirePyModules(t, "PIL")
	_, ts := newTestServer(t, Config{})
	dir := t.TempDir()
	lines := execute(t, ts.URL, map[string]any{"code": "from PIL import Image\n" +
		"img = Image.new('RGB', (8, 4), (255, 0, 0))\nimg.save(" + pyString(dir+"/red.png") + ")\nimg.save(" + pyString(dir+"/red.jpg") + ", 'JPEG', quality=90)"})
	r := ofType(lines, "result")
	if len(r) != 2 {
		t.Fatalf("want one image result per save, got %v", lines)
	}
	png, err := base64.StdEncoding.DecodeString(r[0].str("png"))
	if err != nil || !strings.HasPrefix(string(png), "\x89PNG") {
		t.Fatalf("png %q: %v", r[0].str("png"), err)
	}
	if r[0]["is_main_result"] != false {
		t.Errorf("a displayed image is not the main result: %v", r[0])
	}
	// The save itself still happened, with its arguments.
	out := stdout(execute(t, ts.URL, map[string]any{"code": "print(Image.open(" + pyString(dir+"/red.jpg") + ").format, Image.open(" + pyString(dir+"/red.png") + ").size)"}))
	if out != "JPEG (8, 4)\n" {
		t.Errorf("saved files: %q", out)
	}
}

func pyString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

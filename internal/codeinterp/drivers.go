package codeinterp

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// The code the code interpreter runs inside its kernels, shipped in its
// binary so that it always matches the server (and needs no template
// rebuild when it changes).
var (
	//go:embed driver/ipython_startup.py
	ipythonRich []byte
	//go:embed driver/ipython_fast.py
	ipythonFast []byte
	//go:embed driver/node_kernel.js
	nodeKernel []byte
	//go:embed driver/py_runner.py
	pyRunnerPy []byte

	// ipythonStartup is the one start-up file an IPython kernel runs:
	// rich results, then the speed-ups.
	ipythonStartup = slices.Concat(ipythonRich, []byte("\n\n"), ipythonFast)
)

// drivers are the files above written to a directory every kernel user
// can read but only we can write.
type drivers struct {
	dir            string
	ipythonStartup string
	nodeKernel     string
	pyRunner       string
}

func writeDrivers() (*drivers, error) {
	dir, err := os.MkdirTemp("", "sbx-codeinterp-")
	if err != nil {
		return nil, fmt.Errorf("kernel driver dir: %w", err)
	}
	d := &drivers{dir: dir, ipythonStartup: filepath.Join(dir, "ipython_startup.py"), nodeKernel: filepath.Join(dir, "node_kernel.js"), pyRunner: filepath.Join(dir, "py_runner.py")}
	err = os.Chmod(dir, 0o755)
	if err == nil {
		err = os.WriteFile(d.ipythonStartup, ipythonStartup, 0o644)
	}
	if err == nil {
		err = os.WriteFile(d.nodeKernel, nodeKernel, 0o644)
	}
	if err == nil {
		err = os.WriteFile(d.pyRunner, pyRunnerPy, 0o644)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("write kernel drivers: %w", err)
	}
	return d, nil
}

python3 -c "import sklearn, torch; print('ml ok', sklearn.__version__, torch.__version__, float(torch.ones(2).sum()))"

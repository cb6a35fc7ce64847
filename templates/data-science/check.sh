python3 -c "import pandas, numpy, matplotlib, seaborn, scipy, statsmodels; print('data-science ok', pandas.__version__)"

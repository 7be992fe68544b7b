"""core: what every layer uses and that knows nothing of networks: typed errors and their
one-line wording (`errors`), how numbers are written (`units`), the one writer of every
output (`atomic`), bundled data (`package_data`), templates (`templates`), progress lines
(`progress`), the native-notice filter (`quiet`), the version. Imports nothing of archspec."""

"""Execution: the direct path and the compiled plan. Imports `documents`, never `transport`."""

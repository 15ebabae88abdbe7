"""The data coming in: checking an input dataset's columns and labels, and the embedded digits dataset."""

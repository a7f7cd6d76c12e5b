"""Data layer shared by every stage: readers -> `Sample` records -> datasets -> DataModules."""

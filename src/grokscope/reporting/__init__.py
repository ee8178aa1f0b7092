"""Report stage: reads run and analysis folders only (never imports the trainer) and writes figures + HTML/MD."""

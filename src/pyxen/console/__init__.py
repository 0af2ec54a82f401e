"""xenconsoled: keeps each guest's console, logs it, and lets ``xl console`` attach."""

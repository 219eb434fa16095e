"""What technicians run to check and mend a unit: doctor, the support bundle, device rules,
serial ports, config edits."""

"""预约接种: slots clinics publish, and bookings made into them correctly under a rush."""

À$
	name_name
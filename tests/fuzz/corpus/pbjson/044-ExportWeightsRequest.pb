À,
	name_name
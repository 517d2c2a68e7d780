À4
name_model
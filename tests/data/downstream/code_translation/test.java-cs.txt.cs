public virtual bool IsEmpty() {return count == 0;}
